"""Shared pytest fixtures (tests build their own data; see DESIGN.md section 3)."""

from __future__ import annotations

import os

import pytest

from configs import corpus as corpus_configs
from distill_jax.data import synthetic


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> str:
  """Folder of a tiny synthetic corpus (preset "tiny": 40 train, 8 dev, 8 test utterances of
  3-8 words, all three TTS engines, 16 kHz FLAC), built once per test session.

  Holds train.jsonl / dev.jsonl / test.jsonl (read with `distill_jax.data.manifest
  .read_manifest`), audio/<split>/*.flac and summary.json. Set DISTILL_JAX_TINY_CORPUS to a
  folder to build it there and reuse it across sessions (a rebuild with the same config is a
  no-op).
  """
  out = os.environ.get("DISTILL_JAX_TINY_CORPUS") or str(tmp_path_factory.mktemp("tiny_corpus"))
  synthetic.build_corpus(corpus_configs.get_corpus_config("tiny"), out, progress=False,
                         verbose=False)
  return out
