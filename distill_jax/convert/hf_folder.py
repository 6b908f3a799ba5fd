"""Hugging Face checkpoint folders <-> Flax params: what the converters of every model share.

Reading: `weight_files` lists a folder's weights (model.safetensors, else pytorch_model.bin, or
their sharded `*.index.json` variants), `read_state_dict` loads them as numpy arrays
(safetensors with the numpy API, no torch; a PyTorch pickle needs torch, imported lazily), and
`read_json` reads a JSON file naming it in errors.

The strict mapping: a converter lists every tensor a checkpoint of its config must hold as a
`TensorSpec` (accepted HF names, Flax path, HF shape, layout maps both ways).
`state_dict_to_params` then uses every tensor exactly once and raises one
`CheckpointMismatchError` naming every unknown, missing, duplicated and mis-shaped tensor;
`check_params` compares a params tree with the module's own (paths and shapes);
`params_to_state_dict` is the inverse.

Writing: `write_hf_folder` writes model.safetensors (float32, `format: pt` as save_pretrained)
and the JSON files of a folder that transformers' `from_pretrained` loads.

Layout maps (views, not copies: converting a large checkpoint does not double its memory; the
consumer, `jax.device_put` or Orbax, copies once, and `params_to_state_dict` makes them
contiguous): Linear `weight` [out, in] <-> Dense `kernel` [in, out] (`transpose`), Conv1d
`weight` [out, in, K] <-> Conv `kernel` [K, in, out] (`conv_to_flax`, its own inverse).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"
CONFIG = "config.json"

Layout = Callable[[np.ndarray], np.ndarray]


class CheckpointMismatchError(ValueError):
  """Checkpoint tensors do not match the config; the message lists every offending key."""


def identity(x: np.ndarray) -> np.ndarray:
  return x


def transpose(x: np.ndarray) -> np.ndarray:
  """[O, I] <-> [I, O] (a view)."""
  return x.T


def conv_to_flax(x: np.ndarray) -> np.ndarray:
  """[O, I, K] <-> [K, I, O] (a view)."""
  return np.transpose(x, (2, 1, 0))


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """One tensor: its HF names (the first is the one written; others are accepted alternatives,
  e.g. two weight-norm namings), Flax path, HF shape and the layout maps both ways."""
  hf_keys: tuple[str, ...]
  path: tuple[str, ...]
  hf_shape: tuple[int, ...]
  to_flax: Layout = identity
  to_hf: Layout = identity


# --- trees ---------------------------------------------------------------------------------------

def set_path(tree: dict, path: Sequence[str], value: Any) -> None:
  """tree[path[0]][path[1]]... = value, creating the dicts on the way."""
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  """{path tuple: leaf} of a nested mapping."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def format_keys(keys: Iterable[str], limit: int = 20) -> str:
  """Sorted, comma-separated, the first `limit` and a count of the rest."""
  keys = sorted(keys)
  more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
  return ", ".join(keys[:limit]) + more


# --- the strict mapping --------------------------------------------------------------------------

def state_dict_to_params(specs: Sequence[TensorSpec], state: Mapping[str, np.ndarray], *,
                         source: str, expected: str, optional: Iterable[str] = (),
                         duplicate_note: str = "keys present under two accepted names"
                         ) -> dict[str, Any]:
  """Maps a state dict onto Flax params, using every tensor exactly once.

  Args:
    specs: every tensor the checkpoint must hold.
    state: {HF key: array}.
    source: the file(s), for the error message.
    expected: what the checkpoint should match, e.g. "its config.json (d_model=384, ...)".
    optional: keys accepted and ignored (e.g. a tied output projection).
    duplicate_note: how the error names a tensor present under two of its accepted names.

  Returns:
    Nested dict of float32 numpy arrays (views of `state` where the layout allows).

  Raises:
    CheckpointMismatchError: unknown, missing, duplicated or mis-shaped tensors, all named.
  """
  used: set[str] = set()
  missing, duplicated, bad_shape = [], [], []
  params: dict[str, Any] = {}
  for spec in specs:
    present = [k for k in spec.hf_keys if k in state]
    if not present:
      missing.append(" or ".join(spec.hf_keys))
      continue
    if len(present) > 1:
      duplicated.append(" and ".join(present))
    key = present[0]
    used.update(present)
    arr = np.asarray(state[key])
    if tuple(arr.shape) != spec.hf_shape:
      bad_shape.append(f"{key}: {tuple(arr.shape)} (expected {spec.hf_shape})")
      continue
    set_path(params, spec.path, spec.to_flax(arr.astype(np.float32, copy=False)))
  unknown = set(state) - used - set(optional)
  problems = []
  if unknown:
    problems.append(f"unexpected keys: {format_keys(unknown)}")
  if missing:
    problems.append(f"missing keys: {format_keys(missing)}")
  if duplicated:
    problems.append(f"{duplicate_note}: {format_keys(duplicated)}")
  if bad_shape:
    problems.append(f"wrong shapes: {'; '.join(bad_shape)}")
  if problems:
    raise CheckpointMismatchError(f"{source} does not match {expected}: " + " | ".join(problems))
  return params


def check_params(expected: Mapping, params: Mapping, what: str, model: str) -> None:
  """Compares a params tree with the module's own (`expected`, e.g. its `param_shapes`): paths
  and shapes. Raises CheckpointMismatchError "{what} do not match {model}: ..." naming them."""
  want = {"/".join(k): tuple(v.shape) for k, v in flatten(expected).items()}
  got = {"/".join(k): tuple(np.shape(v)) for k, v in flatten(params).items()}
  problems = []
  if set(got) - set(want):
    problems.append(f"unexpected params: {format_keys(set(got) - set(want))}")
  if set(want) - set(got):
    problems.append(f"missing params: {format_keys(set(want) - set(got))}")
  bad = [f"{k}: {got[k]} (expected {want[k]})" for k in sorted(set(got) & set(want))
         if got[k] != want[k]]
  if bad:
    problems.append(f"wrong shapes: {'; '.join(bad[:20])}")
  if problems:
    raise CheckpointMismatchError(f"{what} do not match {model}: " + " | ".join(problems))


def params_to_state_dict(specs: Sequence[TensorSpec], params: Mapping,
                         name: Callable[[TensorSpec], str] = lambda s: s.hf_keys[0]
                         ) -> dict[str, np.ndarray]:
  """Flax params -> {HF key: contiguous float32 array}, one entry per spec, written under
  `name(spec)` (default its first HF name). Check the tree with `check_params` first."""
  flat = flatten(params)
  out = {}
  for spec in specs:
    key = name(spec)
    arr = spec.to_hf(np.asarray(flat[spec.path], dtype=np.float32))
    if tuple(arr.shape) != spec.hf_shape:  # guards the layout maps themselves
      raise CheckpointMismatchError(f"{'/'.join(spec.path)} -> {key}: shape {arr.shape}, "
                                    f"expected {spec.hf_shape}")
    out[key] = np.ascontiguousarray(arr)
  return out


# --- reading folders -----------------------------------------------------------------------------

def read_json(path: str, error: type[Exception] = ValueError) -> Any:
  """The content of a JSON file; invalid JSON raises `error` naming the file."""
  with open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise error(f"{path} is not valid JSON: {e}") from None


def weight_files(folder: str) -> list[str]:
  """The weight files of a HF folder, in load order (safetensors preferred, shards sorted)."""
  for single, index in ((SAFETENSORS, SAFETENSORS + ".index.json"),
                        (PYTORCH_BIN, PYTORCH_BIN + ".index.json")):
    if os.path.isfile(os.path.join(folder, single)):
      return [os.path.join(folder, single)]
    if os.path.isfile(os.path.join(folder, index)):
      shards = sorted(set(read_json(os.path.join(folder, index))["weight_map"].values()))
      return [os.path.join(folder, s) for s in shards]
  raise FileNotFoundError(
      f"{folder}: no weights ({SAFETENSORS}, {PYTORCH_BIN} or a sharded *.index.json)")


def files_sha256(paths: Iterable[str]) -> str:
  """sha256 of the files' bytes, concatenated in order."""
  h = hashlib.sha256()
  for path in paths:
    with open(path, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 24), b""):
        h.update(chunk)
  return h.hexdigest()


def weights_sha256(folder: str) -> str:
  """sha256 of the weight file (of the shards in order, for a sharded checkpoint)."""
  return files_sha256(weight_files(folder))


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  out = {}
  with safe_open(path, framework="np") as f:
    for key in f.keys():
      try:
        out[key] = f.get_tensor(key)
      except Exception as e:  # e.g. bfloat16, which the numpy API cannot return.
        raise ValueError(f"{path}: cannot read tensor {key!r} with numpy ({e}); convert the "
                         "checkpoint to float32 first") from e
  return out


def _read_torch_bin(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
        f"{path} is a PyTorch pickle and reading it needs torch (pip install torch, CPU build), "
        "or convert the folder to model.safetensors first") from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  return {k: v.detach().to(torch.float32).numpy() for k, v in state.items()}


def read_state_dict(folder: str) -> dict[str, np.ndarray]:
  """All tensors of a HF folder's weights as numpy arrays; a key in two shards is an error."""
  state: dict[str, np.ndarray] = {}
  for path in weight_files(folder):
    part = _read_safetensors(path) if path.endswith(".safetensors") else _read_torch_bin(path)
    dup = set(part) & set(state)
    if dup:
      raise CheckpointMismatchError(f"{path}: keys already in another shard: {format_keys(dup)}")
    state.update(part)
  return state


# --- writing folders -----------------------------------------------------------------------------

def write_files(out_dir: str, files: Mapping[str, Any], *, sort_keys: bool = True) -> None:
  """Writes {file name: JSON-able object, or str written as is} into `out_dir` (JSON indented
  by 2, UTF-8 unescaped, a final newline)."""
  for name, content in files.items():
    with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
      if isinstance(content, str):
        f.write(content)
      else:
        json.dump(content, f, indent=2, sort_keys=sort_keys, ensure_ascii=False)
        f.write("\n")


def write_hf_folder(out_dir: str, state: Mapping[str, np.ndarray], config: Mapping[str, Any],
                    files: Mapping[str, Any] | None = None, *, sort_keys: bool = True) -> str:
  """Writes model.safetensors (the float32 `state`), config.json (`config` with
  `dtype: float32`, what is written; transformers would otherwise cast to a stored float16) and
  the other `files` (see `write_files`) into `out_dir` (created). Returns `out_dir`."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, SAFETENSORS)
  save_file(dict(state), path, metadata={"format": "pt"})
  os.chmod(path, 0o644)  # safetensors creates it owner-only
  config = dict(config)
  config.pop("torch_dtype", None)
  config["dtype"] = "float32"
  write_files(out_dir, {CONFIG: config, **(files or {})}, sort_keys=sort_keys)
  return out_dir
