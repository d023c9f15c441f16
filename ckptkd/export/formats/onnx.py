"""ONNX, through torch's current exporter: ``torch.onnx.export(..., dynamo=True)`` translates the
``torch.export`` graph (with ``onnxscript``), and onnxruntime runs the file in the check.

The batch axis is named ``batch`` and stays dynamic. The opset is pinned, so the file a given
ckptkd writes does not change with the torch it runs on.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import CannotExport, Format, need, program, quiet_exporter, register_format

OPSET = 20  # torch 2.13's default for the dynamo exporter; onnxruntime >= 1.16 runs it
PACKAGES = "onnx, onnxscript and onnxruntime"


def write(model: nn.Module, example: torch.Tensor) -> bytes:
    for module in ("onnx", "onnxscript", "onnxruntime"):  # all three before minutes of work
        need(module, "ONNX", PACKAGES)
    graph = program(model, example)
    try:
        with quiet_exporter():
            exported = torch.onnx.export(graph, dynamo=True, input_names=["input"], output_names=["logits"],
                                         opset_version=OPSET, verbose=False)
    except Exception as e:  # an operator torch.onnx cannot translate
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CannotExport(f"torch.onnx cannot translate its graph ({first[:160]})") from None
    batch_axes = {value.shape[0] for value in [*exported.model.graph.inputs, *exported.model.graph.outputs]
                  if value.shape is not None and not isinstance(value.shape[0], int)}
    exported.rename_axes({axis: "batch" for axis in batch_axes})  # torch names it after its symbol (s77)
    return exported.model_proto.SerializeToString()


def load(blob: bytes):
    ort = need("onnxruntime", "ONNX", PACKAGES)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as torch gets, for a fair timing
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


register_format(Format("onnx", "onnxruntime", write, load))
