"""What the compression passes share: calibration, packing, latency, gates.

The passes of ``passes/`` (quantize-int8, prune-magnitude, prune-channels, binarize,
substitute-student) and the command line meet each need here once, one module per need:
calibration of activation ranges and int8 grids, bit packing, latency on onnxruntime, accuracy
gates, per-layer sensitivity. For example, ``latency`` names the CPU and its int8 features,
times models side by side as ratios measured in one run, and profiles a model to check that no
weight DequantizeLinear runs at run time.

Modules here may import the compiler core, the ONNX bridge and ``train``, never a pass or a
command (tests/test_layout.py checks it).
"""
