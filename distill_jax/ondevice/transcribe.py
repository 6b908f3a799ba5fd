"""Audio file -> text with an exported folder: load, features, ONNX model, CTC decoding.

    t = Transcriber.load("exports/student", int8=True, decoder="beam_lm", lm="lm3.arpa")
    t.transcribe_file("clip.mp3")        # any format soundfile reads, any rate, any channels
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from distill_jax.ondevice import audio as audio_lib
from distill_jax.ondevice import ctc
from distill_jax.ondevice.arpa import ArpaLM
from distill_jax.ondevice.features import FeatureExtractor
from distill_jax.ondevice.model import OnDeviceModel

DECODERS = ("greedy", "beam", "beam_lm")


@dataclasses.dataclass
class Result:
  text: str
  audio_seconds: float
  compute_seconds: float  # features + model + decoding (not file decoding)


class Transcriber:
  """An on-device model plus its feature extractor and a CTC decoder."""

  def __init__(self, model: OnDeviceModel, decoder: str = "greedy", beam_size: int = 16,
               lm: ArpaLM | None = None, alpha: float = 0.5, beta: float = 1.0,
               frontend: Callable[[np.ndarray], np.ndarray] | None = None,
               sample_rate: int | None = None):
    """`model` needs `meta` (vocabulary keys), `blank_id` and `log_probs(features)`;
    `frontend` (waveform [S] -> model input) defaults to the folder's feature extractor."""
    if decoder not in DECODERS:
      raise ValueError(f"decoder={decoder!r} is not one of {DECODERS}")
    if decoder == "beam_lm" and lm is None:
      raise ValueError("decoder='beam_lm' needs an ARPA language model (lm=)")
    self.model, self.decoder, self.beam_size = model, decoder, beam_size
    self.lm, self.alpha, self.beta = lm, alpha, beta
    meta = model.meta
    if frontend is None:
      frontend = FeatureExtractor(meta["feature_config"])
      sample_rate = frontend.sample_rate
    self.features, self.sample_rate = frontend, int(sample_rate or 16000)
    self._text = dict(vocabulary=meta["vocabulary"], word_delimiter=meta["word_delimiter"],
                      skip_tokens=meta["special_tokens"])

  @classmethod
  def load(cls, folder: str, *, int8: bool = False, threads: int = 1, decoder: str = "greedy",
           beam_size: int = 16, lm: str | None = None, alpha: float = 0.5,
           beta: float = 1.0) -> "Transcriber":
    return cls(OnDeviceModel.load(folder, int8=int8, threads=threads), decoder, beam_size,
               ArpaLM.read(lm) if lm else None, alpha, beta)

  def decode(self, log_probs: np.ndarray) -> str:
    """[T', V] -> text."""
    blank = self.model.blank_id
    if self.decoder == "greedy":
      ids = ctc.greedy(log_probs, blank)
    else:
      lm = self.lm if self.decoder == "beam_lm" else None
      hyps = ctc.prefix_beam_search(log_probs, self.beam_size, blank, lm=lm,
                                    vocabulary=self._text["vocabulary"],
                                    word_delimiter=self._text["word_delimiter"],
                                    skip_tokens=self._text["skip_tokens"], alpha=self.alpha,
                                    beta=self.beta)
      ids = hyps[0][0] if hyps else []
    return ctc.ids_to_text(ids, **self._text)

  def transcribe(self, waveform: np.ndarray) -> Result:
    """float32 mono [S] at `self.sample_rate` -> Result."""
    start = time.perf_counter()
    log_probs = self.model.log_probs(self.features(waveform))
    text = self.decode(log_probs)
    return Result(text, waveform.shape[0] / self.sample_rate, time.perf_counter() - start)

  def transcribe_file(self, path: str) -> Result:
    return self.transcribe(audio_lib.load_audio(path, self.sample_rate))
