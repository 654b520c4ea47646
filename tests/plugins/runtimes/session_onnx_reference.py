"""Device-runner session of the test-only `onnx_reference` runtime (see onnx_reference.yaml):
what a new runtime adds to the runner, as one module beside it."""


def register(runner):
    import numpy as np

    @runner.register_session
    class ReferenceSession(runner._Session):
        runtime = "onnx_reference"
        formats = ("onnx",)
        # the ONNX exporter writes ORT's optimisation level; the reference evaluator has no
        # optimiser, so it takes the key and ignores it
        options = {"graph_optimization_level": lambda value, field: runner._choice(value, runner.ORT_OPTIMIZATION_LEVELS, field)}

        @staticmethod
        def precision_of(key):
            return "fp32"  # numpy float32 arithmetic for every op of an fp32 graph

        def __init__(self, model_path, options, threads, profile_ops=False):
            import onnx
            from onnx.reference import ReferenceEvaluator

            self.version = onnx.__version__
            model = onnx.load(model_path)
            self.model = model
            self.evaluator = ReferenceEvaluator(model)
            init = set(i.name for i in model.graph.initializer)
            self.inputs = [(i.name, [d.dim_value if d.HasField("dim_value") else (d.dim_param or "batch")
                                     for d in i.type.tensor_type.shape.dim], "tensor(float)")
                           for i in model.graph.input if i.name not in init]
            self.output_names = [o.name for o in model.graph.output]

        def run(self, feeds):
            return dict(zip(self.output_names, (np.asarray(v) for v in self.evaluator.run(None, feeds))))

        def executed(self, feeds):
            self.run(feeds)
            counts = {}
            for node in self.model.graph.node:
                if node.op_type in ("MatMul", "Gemm", "Conv"):
                    counts[node.op_type] = counts.get(node.op_type, 0) + 1
            return {"compute_ops": counts}
