r"""The denoiser's listening page from a comparison run (issue 27):

  python -m benchmarks.enhance_compare ... --save_audio=2 --out=runs/enh_compare
  python -m launch.listening_page --compare=runs/enh_compare --out=docs/listening.html

One offline HTML file (distill_jax/viz/listening.py): per SNR, every system's clips as players,
spectrograms and metrics.
"""

import logging

from absl import app, flags

from distill_jax.viz import listening
from launch import common

_COMPARE = flags.DEFINE_string("compare", None, "enhance_compare --out folder.", required=True)
_OUT = flags.DEFINE_string("out", None, "HTML file to write.", required=True)
_TITLE = flags.DEFINE_string("title", "Hearing-aid denoiser: listening page", "Page title.")


def main(argv):
  del argv
  common.setup_logging()
  clips, systems = listening.clips_from_compare(_COMPARE.value)
  info = listening.write_listening_page(
      clips, systems, _OUT.value, title=_TITLE.value,
      notes=f"Test mixtures of benchmarks/enhance_compare.py ({_COMPARE.value}): held-out "
      "speakers and noises. Metrics: PESQ-WB, ESTOI, SI-SDR (dB).")
  logging.info("%s: %d clips x %d systems, %.1f MB", _OUT.value, info["clips"],
               len(info["systems"]), info["bytes"] / 1e6)


if __name__ == "__main__":
  app.run(main)
