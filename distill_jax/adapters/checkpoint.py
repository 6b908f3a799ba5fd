"""Adapters saved and restored with Orbax on their own, tied to the base they were trained on.

An adapter checkpoint (a few MB) holds only the A and B arrays, each adapter's rank / alpha /
dropout / in_ndim, the target patterns, free-form metadata, and a fingerprint of the base
params: a sha256 per base leaf (path, shape, dtype and bytes; an `NF4Tensor` by its codes and
block sizes) and one over all of them. `load_adapters(path, base_params)` recomputes the
fingerprint and refuses a different base, naming the params that differ. A float base matches
adapters trained on its NF4 quantization (QLoRA) when quantizing it with the recorded block
sizes reproduces the recorded codes, so QLoRA adapters can be checked against, and merged into,
the float teacher checkpoint.

    save_adapters(path, adapters, base, patterns=PATTERNS, metadata={'step': 1000})
    restored = load_adapters(path, base)           # restored.adapters, .patterns, .metadata
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from distill_jax.adapters.lora import LoRAWeights, check_adapters_fit, flatten_adapters
from distill_jax.adapters.nf4 import is_nf4, quantize_nf4
from distill_jax.adapters.tree import ParamPath, Patterns, PyTree, flatten_params, nest, path_str

FORMAT = "distill_jax.lora/2"


def _leaf_kind(leaf: Any) -> str:
  if is_nf4(leaf):
    dq = f"dq{leaf.dq_block_size}" if leaf.double_quant else "nodq"
    return f"nf4:{leaf.block_size}:{dq}"
  return "float"


def _leaf_digest(path: ParamPath, leaf: Any) -> str:
  h = hashlib.sha256()
  dtype = leaf.dtype if is_nf4(leaf) else np.dtype(leaf.dtype).name
  h.update(f"{path_str(path)}|{_leaf_kind(leaf)}|{tuple(leaf.shape)}|{dtype}|".encode())
  arrays = ([leaf.packed, leaf.absmax, leaf.absmax_scale, leaf.absmax_offset] if is_nf4(leaf)
            else [leaf])
  for a in arrays:
    if a is not None:
      h.update(np.ascontiguousarray(jax.device_get(a)).tobytes())
  return h.hexdigest()


def _combine(digests: Mapping[str, str]) -> str:
  h = hashlib.sha256()
  for name in sorted(digests):
    h.update(f"{name}={digests[name]};".encode())
  return h.hexdigest()


def base_fingerprint(base_params: PyTree) -> dict:
  """{'sha256': hex over all leaves, 'leaves': {path: {'sha256', 'kind'}}} of a param tree.

  Reads every byte of the base (about 2 s per GB on one core).
  """
  leaves = {}
  for path, leaf in flatten_params(base_params).items():
    leaves[path_str(path)] = {"sha256": _leaf_digest(path, leaf), "kind": _leaf_kind(leaf)}
  return {"sha256": _combine({k: v["sha256"] for k, v in leaves.items()}), "leaves": leaves}


class BaseMismatchError(ValueError):
  """The base params are not the ones the adapters were trained on; names the differences."""


def _requantized_digest(path: ParamPath, leaf: Any, kind: str) -> str | None:
  """Digest of a float leaf after NF4 quantization as recorded in `kind`, or None."""
  parts = kind.split(":")
  if is_nf4(leaf) or parts[0] != "nf4":
    return None
  double_quant = parts[2] != "nodq"
  dq_block = int(parts[2][2:]) if double_quant else 256
  q = quantize_nf4(jnp.asarray(leaf), block_size=int(parts[1]), double_quant=double_quant,
                   dq_block_size=dq_block)
  return _leaf_digest(path, q)


def check_base(saved: Mapping[str, Any], base_params: PyTree, where: str) -> None:
  """Raises `BaseMismatchError` unless `base_params` has the fingerprint `saved`."""
  flat = {path_str(p): (p, leaf) for p, leaf in flatten_params(base_params).items()}
  expected = saved["leaves"]
  missing = [k for k in expected if k not in flat]
  extra = [k for k in flat if k not in expected]
  differ, quantized_here = [], []
  for name, (path, leaf) in flat.items():
    if name not in expected:
      continue
    want = expected[name]
    if _leaf_digest(path, leaf) == want["sha256"]:
      continue
    if is_nf4(leaf) and want["kind"] == "float":
      quantized_here.append(name)
    elif _requantized_digest(path, leaf, want["kind"]) != want["sha256"]:
      differ.append(name)
  if not (missing or extra or differ or quantized_here):
    return
  lines = [f"{where}: these adapters were trained on a different base (fingerprint "
           f"{saved['sha256'][:16]}...)"]
  for label, names in (("params missing from this base", missing),
                       ("params this base has in addition", extra),
                       ("params whose values differ", differ),
                       ("params NF4-quantized here but float in the adapters' base (quantization "
                        "is lossy, so they cannot be checked: pass the float base)",
                        quantized_here)):
    if names:
      lines.append(f"  {len(names)} {label}: {', '.join(names[:5])}"
                   + (", ..." if len(names) > 5 else ""))
  raise BaseMismatchError("\n".join(lines))


def save_adapters(path: str, adapters: PyTree, base_params: PyTree, *, patterns: Patterns,
                  metadata: Mapping[str, Any] | None = None, overwrite: bool = False) -> dict:
  """Saves the adapters alone with Orbax, with their patterns and the base's fingerprint.

  Args:
    path: checkpoint directory (created; must not exist unless `overwrite`).
    adapters: from `init_lora` or training.
    base_params: the (float or quantized) base they were trained on; only its fingerprint is
      stored.
    patterns: the target patterns the adapters were built from (stored for `init_lora` reuse).
    metadata: JSON-serializable extras (base model id, step, data, ...).
    overwrite: replace an existing checkpoint at `path`.

  Returns:
    The JSON info written next to the arrays.
  """
  path = os.path.abspath(path)
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"adapter checkpoint already exists: {path}")
  flat = flatten_adapters(adapters)
  if not flat:
    raise ValueError("no adapters to save")
  check_adapters_fit(base_params, adapters)
  patterns = [patterns] if isinstance(patterns, str) else list(patterns)
  arrays = nest({p: {"lora_a": l.a, "lora_b": l.b} for p, l in flat.items()})
  info = {
      "format": FORMAT,
      "patterns": patterns,
      "adapters": [{"path": list(p), "alpha": l.alpha, "dropout": l.dropout, "rank": l.rank,
                    "in_ndim": l.in_ndim} for p, l in flat.items()],
      "base_fingerprint": base_fingerprint(base_params),
      "metadata": dict(metadata or {}),
  }
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  try:
    checkpointer.save(path, ocp.args.Composite(adapters=ocp.args.StandardSave(arrays),
                                               info=ocp.args.JsonSave(info)), force=overwrite)
  finally:
    checkpointer.close()
  return info


class SavedAdapters(NamedTuple):
  adapters: dict  # as init_lora builds them
  patterns: list[str]
  metadata: dict
  base_sha256: str


def load_adapters(path: str, base_params: PyTree | None) -> SavedAdapters:
  """Restores what `save_adapters` wrote, checking that `base_params` is the base it belongs to.

  Args:
    path: the checkpoint directory.
    base_params: the base to apply them to (float, or quantized exactly as in training); None
      skips the check (inspection only).

  Raises:
    FileNotFoundError, ValueError (not an adapter checkpoint), BaseMismatchError.
  """
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no adapter checkpoint at {path}")
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  try:
    restored = checkpointer.restore(path, ocp.args.Composite(
        adapters=ocp.args.StandardRestore(), info=ocp.args.JsonRestore()))
  finally:
    checkpointer.close()
  info = restored["info"]
  if not isinstance(info, dict) or info.get("format") != FORMAT:
    found = info.get("format") if isinstance(info, dict) else type(info).__name__
    raise ValueError(f"{path}: not an adapter checkpoint of format {FORMAT!r} (found {found!r})")
  if base_params is not None:
    check_base(info["base_fingerprint"], base_params, path)
  arrays = restored["adapters"]
  out = {}
  for entry in info["adapters"]:
    node = arrays
    for key in entry["path"]:
      node = node[key]
    out[tuple(entry["path"])] = LoRAWeights(
        a=jnp.asarray(node["lora_a"]), b=jnp.asarray(node["lora_b"]),
        alpha=float(entry["alpha"]), dropout=float(entry["dropout"]),
        in_ndim=int(entry["in_ndim"]))
  adapters = nest(out)
  if base_params is not None:
    check_adapters_fit(base_params, adapters)
  return SavedAdapters(adapters, list(info["patterns"]), dict(info["metadata"]),
                       info["base_fingerprint"]["sha256"])
