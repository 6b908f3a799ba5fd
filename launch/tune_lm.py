r"""Tunes the LM weight and word bonus of 'beam_lm' decoding on a split (dev by default).

    python -m launch.tune_lm --workdir=runs/student --lm=corpora/large/lm3.arpa

The run's saved config gives the data and decoding (--config overrides them). Writes
workdir/eval/lm_tuning_<split>_step<N>.json and prints the best point; pass it to launch.eval
with --config.eval.decoder=beam_lm --config.eval.lm_alpha=A --config.eval.lm_beta=B.
"""

import json
import os

from absl import app, flags

from distill_jax.jobs import evaluate
from launch import common

_CONFIG = common.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder.", required=True)
_CHECKPOINT = common.define_checkpoint_flag()
_SPLIT = flags.DEFINE_string("split", "dev", "config.data entry to tune on.")
_LM = flags.DEFINE_string("lm", None, "ARPA LM (default: the config's eval.lm).")
_ALPHAS = flags.DEFINE_list("alphas", ["0.3", "0.5", "0.7", "1.0"], "LM weights to try.")
_BETAS = flags.DEFINE_list("betas", ["0", "1", "2", "3"], "Word bonuses to try.")


def main(argv):
  del argv
  common.setup_logging()
  config = evaluate.run_config(_WORKDIR.value, _CONFIG.value)
  with config.unlocked():
    config.eval.decoder = "beam_lm"
    config.eval.lm = _LM.value or config.eval.lm
  result = evaluate.tune_lm_weights(
      _WORKDIR.value, _CHECKPOINT.value, _SPLIT.value, config=config,
      alphas=[float(a) for a in _ALPHAS.value], betas=[float(b) for b in _BETAS.value])
  path = os.path.join(_WORKDIR.value, "eval",
                      f"lm_tuning_{_SPLIT.value}_step{result['step']}.json")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(dict(result, lm=config.eval.lm, beam_size=config.eval.beam_size), f, indent=2)
  for g in result["grid"]:
    print(f"alpha={g['alpha']:.2f} beta={g['beta']:.2f}  WER {100 * g['wer']:.2f}%  "
          f"CER {100 * g['cer']:.2f}%")
  print(f"best: {result['best']}  ({path})")


if __name__ == "__main__":
  app.run(main)
