r"""Denoise audio files with a trained denoiser run (issue 27):

  python -m launch.enhance runs/enh_recon noisy.wav enhanced.wav [--stream] [--checkpoint=best]
  python -m launch.enhance runs/enh_recon a.wav b.flac --out_dir=enhanced/ --audiogram=mild

Any format libsndfile reads, any sample rate and channel count; the output keeps the input's
rate, channels and length (distill_jax/enhance/inference.py says how; `--stream` runs the
frame-by-frame model). With two positional files and no --out_dir, the second is the output.
"""

import json
import logging
import os

import soundfile as sf
from absl import app, flags

from distill_jax.audio import io as audio_io
from distill_jax.enhance import inference, nalr
from launch import common

_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step.")
_STREAM = flags.DEFINE_bool("stream", False, "Run the streaming (frame-by-frame) model.")
_OUT_DIR = flags.DEFINE_string("out_dir", "", "Write each input's output here (same name).")
_AUDIOGRAM = flags.DEFINE_string(
    "audiogram", "", "NAL-R gains for a listener: HZ:DB_HL pairs at 250,500,1000,2000,4000,6000 "
    "Hz (e.g. 250:15,500:20,1000:25,2000:35,4000:45,6000:50) or a name in enhance/nalr.py "
    "AUDIOGRAMS (mild, moderate, sloping).")


def main(argv):
  common.setup_logging()
  args = argv[1:]
  if len(args) < 2:
    raise app.UsageError("usage: python -m launch.enhance RUN IN [OUT] | RUN IN... --out_dir=D")
  run, files = args[0], args[1:]
  if _OUT_DIR.value:
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    pairs = [(f, os.path.join(_OUT_DIR.value, os.path.basename(f))) for f in files]
  elif len(files) == 2:
    pairs = [(files[0], files[1])]
  else:
    raise app.UsageError("give IN OUT, or several inputs with --out_dir")
  model, params, _ = inference.load_run(run, _CHECKPOINT.value)
  audiogram = None
  if _AUDIOGRAM.value:
    audiogram = (nalr.named(_AUDIOGRAM.value) if ":" not in _AUDIOGRAM.value
                 else nalr.parse_audiogram(_AUDIOGRAM.value))
    nalr.nalr_gains_db(audiogram)  # a bad audiogram fails before any file is read
  for src, dst in pairs:
    if os.path.abspath(src) == os.path.abspath(dst):
      raise app.UsageError(f"{dst}: the output would overwrite its input")
    x, rate = audio_io.load_channels(src)
    y, report = inference.enhance_channels(model, params, x, rate, stream=_STREAM.value,
                                           audiogram=audiogram)
    sf.write(dst, y.T, rate)
    logging.info("%s -> %s %s", src, dst, json.dumps(report))


if __name__ == "__main__":
  app.run(main)
