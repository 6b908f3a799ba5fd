"""Text-to-speech engine wrappers: one `synthesize` call for flite, espeak-ng and hibari.

Every engine takes the same three knobs so the corpus builder can treat them alike:

  rate:  speaking-rate multiplier (1.0 = the voice's own pace, 1.2 = 20 % faster).
  pitch: multiplier of the voice's mean F0 (1.0 = its own register).
  seed:  fixes the engine's randomness (only hibari has any: its noise excitation).

How each engine implements them:

  flite      `--setf duration_stretch=1/rate`; pitch as `--setf int_f0_target_mean=<Hz>` around
             the voice's measured mean F0 (`Voice.base_f0`). The `rms` voice ignores
             int_f0_target_mean, so it gets no pitch variation (base_f0=None).
             Output is 16 kHz (kal: 8 kHz), read back from a temp WAV.
  espeak-ng  `-s round(175*rate)` words per minute and `-p` 0..99 (50 = default register; one
             unit is about 0.8 % of F0 near 50, so `-p = 50 + 125*(pitch-1)`), text on stdin,
             22.05 kHz temp WAV.
  hibari     a small neural model (ONNX) + a source-filter vocoder (`hibari.dsp.synth`). We call
             the network ourselves and scale its predicted F0 curve by `pitch` before the vocoder
             (the spectral envelope is kept, so formants do not move); `speed=rate`. Only the
             voice "heart" ships in the wheel (others download on first use, which this
             workplace cannot do), so hibari "voices" here are heart x G2P accent (US / British
             spelling-to-sound rules) x pitch register. 24 kHz float32.

Voices are named `<engine>/<name>` (e.g. `espeak-ng/en-gb-scotland+m3`, `hibari/heart-gb-low`);
`Voice.group` is the person behind a voice (flite `kal` and `kal16` are the same speaker at two
sample rates; espeak-ng accent+variant combinations share a variant's timbre), which is what
held-out splits must keep apart.

Engines are loaded lazily: flite/espeak-ng are subprocesses; hibari models are created once per
process (per accent) and cached, which is what a multiprocessing worker wants.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
import tempfile
from typing import Optional

import numpy as np
import soundfile as sf

FLITE, ESPEAK, HIBARI = "flite", "espeak-ng", "hibari"
ENGINES = (FLITE, ESPEAK, HIBARI)
SUBPROCESS_TIMEOUT_S = 120.0
ESPEAK_DEFAULT_WPM = 175


class TTSError(RuntimeError):
  """A synthesis that failed; the message names the engine, voice and text."""


@dataclasses.dataclass(frozen=True)
class Voice:
  """One synthetic speaker: engine + voice + variant.

  Attributes:
    engine: one of `ENGINES`.
    name: the voice's name within the engine ("slt", "en-gb+m3", "heart-gb-low").
    group: hold-out unit; voices sharing a group must land in the same split.
    base_f0: flite only: the voice's mean F0 in Hz (None: pitch cannot be changed).
    accent: hibari only: "us" or "gb" G2P rules. espeak-ng: the accent part of `name`.
    register: hibari only: F0 multiplier applied on top of the per-utterance pitch.
  """
  engine: str
  name: str
  group: str
  base_f0: Optional[float] = None
  accent: str = ""
  register: float = 1.0

  @property
  def speaker(self) -> str:
    return f"{self.engine}/{self.name}"


# ----------------------------------------------------------------------------------------------
# Voice inventories.

# Mean F0 of each flite voice at default settings, measured with an autocorrelation tracker.
_FLITE_BASE_F0 = {"kal": 95.0, "kal16": 95.0, "awb": 125.0, "rms": None, "slt": 170.0}
_FLITE_GROUP = {"kal": "kal", "kal16": "kal", "awb": "awb", "rms": "rms", "slt": "slt"}

ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
                  "en-us-nyc", "en-gb-x-gbcwmd")
# Variants (voice timbre files in espeak-ng-data/voices/!v) that sound like a plausible reader;
# novelty ones (whisper, croak, robots, Demonic ...) are left out.
ESPEAK_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "Andy", "Annie", "Alicia", "Gene", "Jacky",
    "Mike", "adam", "belinda", "linda", "benjamin", "david", "edward", "grandpa", "paul",
    "quincy", "robert", "steph", "travis")

HIBARI_REGISTERS = {"": 1.0, "-high": 1.2, "-low": 0.78}


def flite_voice(name: str) -> Voice:
  if name not in _FLITE_BASE_F0:
    raise ValueError(f"unknown flite voice {name!r}; known: {sorted(_FLITE_BASE_F0)}")
  return Voice(FLITE, name, f"{FLITE}/{_FLITE_GROUP[name]}", base_f0=_FLITE_BASE_F0[name])


def espeak_voice(accent: str, variant: str) -> Voice:
  if accent not in ESPEAK_ACCENTS:
    raise ValueError(f"unknown espeak-ng accent {accent!r}; known: {ESPEAK_ACCENTS}")
  if variant not in ESPEAK_VARIANTS:
    raise ValueError(f"unknown espeak-ng variant {variant!r}; known: {ESPEAK_VARIANTS}")
  return Voice(ESPEAK, f"{accent}+{variant}", f"{ESPEAK}/{variant}", accent=accent)


def hibari_voice(name: str) -> Voice:
  """`heart-<us|gb>[-high|-low]`: the bundled voice, G2P accent, pitch register."""
  parts = name.split("-")
  register = "-" + parts[2] if len(parts) == 3 else ""
  if (len(parts) not in (2, 3) or parts[0] != "heart" or parts[1] not in ("us", "gb")
      or register not in HIBARI_REGISTERS):
    raise ValueError(f"unknown hibari voice {name!r}; expected heart-<us|gb>[-high|-low]")
  return Voice(HIBARI, name, f"{HIBARI}/{name}", accent=parts[1],
               register=HIBARI_REGISTERS[register])


def voice_from_speaker(speaker: str) -> Voice:
  """Inverse of `Voice.speaker`: "espeak-ng/en-gb+m3" -> Voice."""
  engine, _, name = speaker.partition("/")
  if engine == FLITE:
    return flite_voice(name)
  if engine == ESPEAK:
    accent, _, variant = name.partition("+")
    return espeak_voice(accent, variant)
  if engine == HIBARI:
    return hibari_voice(name)
  raise ValueError(f"unknown engine {engine!r} in speaker {speaker!r}; known: {ENGINES}")


# ----------------------------------------------------------------------------------------------
# Engine availability and versions.

def check_engine(engine: str) -> None:
  """Raises `TTSError` naming what is missing when `engine` cannot run here."""
  if engine in (FLITE, ESPEAK):
    if shutil.which(engine) is None:
      raise TTSError(f"TTS engine {engine!r} not found on PATH (Debian: apt-get install {engine})")
  elif engine == HIBARI:
    try:
      import hibari  # pylint: disable=import-outside-toplevel,unused-import
      from hibari import dsp  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise TTSError(f"TTS engine 'hibari' not importable ({e}); pip install hibari-tts") from e
    if not hasattr(dsp, "synth"):
      raise TTSError("hibari.dsp.synth is missing: hibari-tts version not supported (need 0.2.x)")
  else:
    raise TTSError(f"unknown TTS engine {engine!r}; known: {ENGINES}")


def engine_version(engine: str) -> str:
  """A version string recorded beside the corpus (audio is reproducible for equal versions)."""
  check_engine(engine)
  if engine == FLITE:
    out = subprocess.run([FLITE, "--version"], capture_output=True, text=True, check=False)
    lines = [ln.strip() for ln in out.stdout.splitlines() if "version" in ln]
    return lines[0] if lines else out.stdout.strip()
  if engine == ESPEAK:
    out = subprocess.run([ESPEAK, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip().split("  Data at")[0]
  import hibari  # pylint: disable=import-outside-toplevel
  import onnxruntime  # pylint: disable=import-outside-toplevel
  return f"hibari {hibari.__version__} (onnxruntime {onnxruntime.__version__})"


# ----------------------------------------------------------------------------------------------
# Synthesis.

def synthesize(voice: Voice, text: str, *, rate: float = 1.0, pitch: float = 1.0,
               seed: int = 0) -> tuple[np.ndarray, int]:
  """Speaks `text` with `voice`.

  Args:
    voice: the speaker.
    text: what to say (plain text with punctuation; no SSML).
    rate: speaking-rate multiplier.
    pitch: F0 multiplier.
    seed: randomness of the engine (hibari noise), for bit-identical repeats.

  Returns:
    (samples float32 [S] mono in [-1, 1] roughly, sample_rate).

  Raises:
    TTSError: the engine failed or returned no audio.
  """
  if not text.strip():
    raise TTSError(f"{voice.speaker}: empty text")
  if voice.engine == FLITE:
    audio, sr = _flite(voice, text, rate, pitch)
  elif voice.engine == ESPEAK:
    audio, sr = _espeak(voice, text, rate, pitch)
  elif voice.engine == HIBARI:
    audio, sr = _hibari(voice, text, rate, pitch, seed)
  else:
    raise TTSError(f"unknown engine {voice.engine!r} for voice {voice.name!r}")
  if audio.size == 0:
    raise TTSError(f"{voice.speaker}: engine returned no audio for {text!r}")
  return audio, sr


def _run_to_wav(cmd: list[str], voice: Voice, text: str, stdin: Optional[str],
                wav_path: str) -> tuple[np.ndarray, int]:
  try:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT_S, check=False)
  except subprocess.TimeoutExpired:
    raise TTSError(f"{voice.speaker}: timed out after {SUBPROCESS_TIMEOUT_S:.0f} s on "
                   f"{text!r}") from None
  if proc.returncode != 0 or not os.path.exists(wav_path):
    raise TTSError(f"{voice.speaker}: exit code {proc.returncode} on {text!r}: "
                   f"{proc.stderr.strip()[:300]}")
  audio, sr = sf.read(wav_path, dtype="float32", always_2d=True)
  return audio.mean(axis=1), int(sr)


def _flite(voice: Voice, text: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
  with tempfile.TemporaryDirectory(prefix="flite-") as tmp:
    wav = os.path.join(tmp, "out.wav")
    cmd = [FLITE, "-voice", voice.name, "--setf", f"duration_stretch={1.0 / rate:.4f}"]
    if voice.base_f0 is not None:
      cmd += ["--setf", f"int_f0_target_mean={voice.base_f0 * pitch:.2f}"]
    cmd += ["-t", text, "-o", wav]
    return _run_to_wav(cmd, voice, text, None, wav)


def espeak_pitch_arg(pitch: float) -> int:
  """F0 multiplier -> espeak-ng `-p` (0..99, 50 = the variant's own register)."""
  return int(min(99, max(0, round(50 + 125 * (pitch - 1.0)))))


def _espeak(voice: Voice, text: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
  with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
    wav = os.path.join(tmp, "out.wav")
    cmd = [ESPEAK, "-v", voice.name, "-s", str(int(round(ESPEAK_DEFAULT_WPM * rate))),
           "-p", str(espeak_pitch_arg(pitch)), "-w", wav, "--stdin"]
    return _run_to_wav(cmd, voice, text, text, wav)


@functools.lru_cache(maxsize=None)
def _hibari_model(accent: str):
  """One Hibari model per process and accent (loading takes ~1 s)."""
  from hibari import Hibari  # pylint: disable=import-outside-toplevel
  from hibari.g2p import G2P  # pylint: disable=import-outside-toplevel
  return Hibari(voice="heart", threads=1, g2p=G2P(british=accent == "gb"))


def _hibari(voice: Voice, text: str, rate: float, pitch: float,
            seed: int) -> tuple[np.ndarray, int]:
  """Mirrors `Hibari.__call__` but scales the predicted F0 curve before the vocoder."""
  from hibari import dsp  # pylint: disable=import-outside-toplevel
  model = _hibari_model(voice.accent)
  rng = np.random.default_rng(seed)
  f0_scale = np.float32(pitch * voice.register)
  parts = []
  try:
    for phonemes in model.phonemize(text):
      ids = model.ids(phonemes)
      if len(ids) < 3:
        continue
      out = model.sess.run(None, {"ids": np.asarray([ids], np.int64),
                                  "speed": np.asarray([rate], np.float32)})
      lh, th, ln, lr, phi, f0 = (o[0] for o in out)
      parts.append(dsp.synth(lh, th, ln, lr, phi, f0 * f0_scale, rng))
  except Exception as e:  # pylint: disable=broad-except
    raise TTSError(f"{voice.speaker}: {type(e).__name__}: {e} on {text!r}") from e
  audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
  return audio.astype(np.float32), int(dsp.SR)
