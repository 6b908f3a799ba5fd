r"""Noise lists (train / dev / test) for the denoiser, no recording source in two splits:

  python -m launch.make_noise_lists --esc50_csv=datasets/esc10/esc10.csv \
      --esc50_audio=datasets/esc10/audio --train_folder=datasets/speech_commands/_silence_ \
      --out=datasets/noise

ESC-50 clips are split per category by source recording (`data/noise_lists.py`); each
--train_folder's files (e.g. Speech Commands `_silence_`) go to training only. Writes
OUT/{train,dev,test}.txt for `--config.data.noise_train` etc. (configs/enhance.py).
"""

import logging

from absl import app, flags

from distill_jax.data import mixing, noise_lists
from launch import common

_CSV = flags.DEFINE_string("esc50_csv", None, "ESC-50 metadata CSV (filename, category, "
                           "src_file columns).", required=True)
_AUDIO = flags.DEFINE_string("esc50_audio", None, "Folder of the CSV's clips.", required=True)
_TRAIN = flags.DEFINE_multi_string("train_folder", [], "Folders of noise used for training only.")
_TEST = flags.DEFINE_integer("test_sources", 2, "Sources per category held out for test.")
_DEV = flags.DEFINE_integer("dev_sources", 1, "Sources per category held out for dev.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the source order.")
_OUT = flags.DEFINE_string("out", None, "Output folder.", required=True)


def main(argv):
  del argv
  common.setup_logging()
  splits = noise_lists.split_by_source(noise_lists.esc50_items(_CSV.value, _AUDIO.value),
                                       _TEST.value, _DEV.value, _SEED.value)
  for folder in _TRAIN.value:
    splits["train"] += mixing.read_noise_list(folder)
  for name, paths in splits.items():
    noise_lists.write_list(paths, f"{_OUT.value}/{name}.txt",
                           f"{name}: made by launch/make_noise_lists.py (seed {_SEED.value})")
    logging.info("%s: %d files -> %s/%s.txt", name, len(paths), _OUT.value, name)


if __name__ == "__main__":
  app.run(main)
