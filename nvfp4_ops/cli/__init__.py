"""The ``nvfp4-ops`` command line: a streaming checkpoint quantizer and its helpers.

One module per concern: :mod:`.main` (argparse, ``info``), :mod:`.discover` (the input),
:mod:`.select` (which tensors are quantized), :mod:`.io` (shard writer, atomic output,
signals), :mod:`.calibration`, :mod:`.quantize`, :mod:`.dequantize`, :mod:`.report`,
:mod:`.hf_config` (``quantization_config`` per layout), :mod:`.common` (shared constants,
the error type, small helpers).
"""
