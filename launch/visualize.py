"""The latent-trajectory page of a distillation run: one self-contained, offline HTML file.

  python -m launch.visualize --workdir=runs/kd --split=test --utterances=5 --out=latent.html

Reads the run's config from its latest checkpoint (--config overrides it), runs the teacher and
every kept student checkpoint (keep snapshots with --config.train.keep_every=K or keep_steps
when distilling), and writes the page plus OUT_vectors.tsv / OUT_metadata.tsv for TensorBoard's
embedding projector. With --screenshots=DIR it then opens the page offline in headless
Chromium (distill_jax/viz/browser.py) and saves it at the last and the first checkpoint, with
the load and render times; a console error or a network request from the page is an error.
See distill_jax/viz/.
"""

import json
import logging
import os
import time

from absl import app, flags

from distill_jax.viz import browser
from distill_jax.jobs import latent_page
from distill_jax.viz import page
from launch import common

_CONFIG = common.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "A distillation run folder.", required=True)
_SPLIT = flags.DEFINE_string("split", "test", "config.data entry to show.")
_UTTERANCES = flags.DEFINE_integer("utterances", 5, "Utterances on the page (the first ones).")
_FIT = flags.DEFINE_integer("fit_utterances", 20, "Utterances the PCA basis, Procrustes maps "
                            "and CKA are fitted on.")
_MAX_CKPT = flags.DEFINE_integer("max_checkpoints", 0, "At most this many checkpoints, evenly "
                                 "spread (0 = all kept).")
_PCA_DIMS = flags.DEFINE_integer("pca_dims", 8, "PCA coordinates kept per frame.")
_T_LAYER = flags.DEFINE_integer("teacher_layer", None, "Teacher layer (default: the deepest KD "
                                "pair's, else the last).")
_S_LAYER = flags.DEFINE_integer("student_layer", None, "Student layer (same default).")
_OUT = flags.DEFINE_string("out", "latent.html", "Output HTML file.")
_SHOTS = flags.DEFINE_string("screenshots", None, "Folder for PNG screenshots of the page in "
                             "headless Chromium (last and first checkpoint).")


def main(argv):
  del argv
  common.setup_logging()
  t0 = time.time()
  d = latent_page.compute_page_data(
      _WORKDIR.value, split=_SPLIT.value, utterances=_UTTERANCES.value,
      fit_utterances=_FIT.value, max_checkpoints=_MAX_CKPT.value, pca_dims=_PCA_DIMS.value,
      teacher_layer=_T_LAYER.value, student_layer=_S_LAYER.value, config=_CONFIG.value)
  info = page.write_page(d, _OUT.value)
  prefix = os.path.splitext(_OUT.value)[0]
  info["projector"] = page.write_projector_tsv(d, prefix)
  info.update(checkpoints=len(d.steps), steps=d.steps, utterances=len(d.utterances),
              seconds=round(time.time() - t0, 1), megabytes=round(info["bytes"] / 2 ** 20, 3))
  if _SHOTS.value:
    shots = browser.screenshots(_OUT.value, _SHOTS.value,
                                prefix=os.path.splitext(os.path.basename(_OUT.value))[0])
    if shots["console_errors"] or shots["external_requests"]:
      raise RuntimeError(f"{_OUT.value} in Chromium: console errors {shots['console_errors']}, "
                         f"requests {shots['external_requests']}")
    info.update(load_s=round(shots["load_s"], 2), render_ms=round(shots["render_ms"]),
                screenshots=shots["files"])
  logging.info("wrote %s", info["path"])
  print(json.dumps(info, indent=1))


if __name__ == "__main__":
  app.run(main)
