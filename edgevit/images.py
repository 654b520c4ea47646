"""One image file -> an 8-bit RGB PIL image, correctly for every mode PIL opens, or a
DataError naming the file and why.

PIL's own ``convert("RGB")`` clips 16-bit and 32-bit integer pixels to 255 (a 16-bit scan
becomes white) and truncates float pixels in [0, 1] to 0 (black), and it drops alpha as
if every transparent pixel had the colour stored under it. Here:
- 16-bit (I;16*) and 32-bit integer (I, how older PIL opens 16-bit PNG/TIFF) pixels are
  read as 16-bit and scaled by 255/65535 (x/257); values outside 0..65535 are refused;
- float (F) pixels must lie in [0, 1] and are scaled by 255; anything else is refused
  (there is no way to tell which range a float image meant);
- alpha (RGBA, LA, PA, P with transparency) is composited on WHITE, as a viewer shows
  the image on a page: transparent pixels do not carry meaningful colour;
- 1-bit, L, P, CMYK, YCbCr, RGBX convert with PIL's rules; other modes are refused.
A decompression bomb (more than PIL's MAX_IMAGE_PIXELS) is refused, never decoded.
"""
from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np

from edgevit.errors import DataError

BACKGROUND = (255, 255, 255)  # alpha is composited on white (see the module docstring)
_PLAIN = frozenset({"RGB", "L", "1", "P", "CMYK", "YCbCr", "RGBX"})
_ALPHA = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_FIX = "re-save it as 8-bit RGB (PNG or JPEG), or remove it from the folder"


def decode_rgb8(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; a bomb is an error at any size
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return _to_rgb8(path, img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: image too large to decode safely ({exc})",
                        f"images over {Image.MAX_IMAGE_PIXELS} pixels are refused as decompression bombs; resize it") from None
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image PIL can read", _FIX) from None
    # a truncated or malformed file surfaces from PIL's decoders as any of these
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError, KeyError,
            ZeroDivisionError, OverflowError, MemoryError) as exc:
        raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {exc})", _FIX) from None


def _to_rgb8(path: Path, img):
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        return _gray(_scaled_16bit(path, np.asarray(img)))
    if mode == "F":
        return _gray(_scaled_float(path, np.asarray(img)))
    if mode == "P" and "transparency" in img.info or mode in _ALPHA:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _PLAIN:
        return img.convert("RGB")
    raise DataError(f"{path}: image mode {mode} is not supported", _FIX)


def _scaled_16bit(path: Path, pixels: np.ndarray) -> np.ndarray:
    if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
        raise DataError(f"{path}: integer pixels outside 0..65535 (min {pixels.min()}, max {pixels.max()})", _FIX)
    return np.rint(pixels.astype(np.float64) / 257.0).astype(np.uint8)


def _scaled_float(path: Path, pixels: np.ndarray) -> np.ndarray:
    if not np.isfinite(pixels).all():
        raise DataError(f"{path}: float image holds NaN or infinite pixels", _FIX)
    if pixels.size and (pixels.min() < 0.0 or pixels.max() > 1.0):
        raise DataError(f"{path}: float pixels outside [0, 1] (min {pixels.min():g}, max {pixels.max():g}); "
                        "their range is ambiguous", _FIX)
    return np.rint(pixels.astype(np.float64) * 255.0).astype(np.uint8)


def _gray(pixels: np.ndarray):
    from PIL import Image

    return Image.fromarray(pixels).convert("RGB")  # 2-D uint8 -> mode L
