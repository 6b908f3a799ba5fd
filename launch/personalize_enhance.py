r"""Personalize a trained denoiser to one listener's situation with LoRA adapters (issue 27):

  python -m launch.personalize_enhance --run=runs/enh_recon --out=runs/enh_personal \
      --clean=datasets/speechocean762/test.jsonl --speaker=SPEAKER \
      --noise=datasets/noise/test.txt --noise_regex='-41\.wav$'

distill_jax/jobs/personalize_denoiser.py says what is adapted on and what is measured.
"""

from absl import app, flags

from distill_jax.jobs import personalize_denoiser
from launch import common

_RUN = flags.DEFINE_string("run", None, "Denoiser training run folder.", required=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step.")
_OUT = flags.DEFINE_string("out", None, "Output folder.", required=True)
_CLEAN = flags.DEFINE_string("clean", None, "Clean speech manifest (held-out speakers).",
                             required=True)
_SPEAKER = flags.DEFINE_string("speaker", None, "The listener's talker (manifest speaker).",
                               required=True)
_NOISE = flags.DEFINE_string("noise", None, "Noise list or folder (held-out noise).",
                             required=True)
_REGEX = flags.DEFINE_string("noise_regex", None, "Regex over noise file names: the situation's "
                             "noise.", required=True)
_STEPS = flags.DEFINE_integer("steps", 150, "Adapter training steps.")
_RANK = flags.DEFINE_integer("rank", 4, "LoRA rank.")
_LR = flags.DEFINE_float("lr", 1e-3, "Adam learning rate.")
_EVAL_UTTS = flags.DEFINE_integer("eval_utterances", 5, "The talker's utterances held out.")
_PER_SNR = flags.DEFINE_integer("per_snr", 6, "Evaluation mixtures per SNR and set.")


def main(argv):
  del argv
  common.setup_logging(_OUT.value)
  personalize_denoiser.run(
      _RUN.value, _OUT.value, clean_manifest=_CLEAN.value, speaker=_SPEAKER.value,
      noise_list=_NOISE.value, noise_regex=_REGEX.value, checkpoint=_CHECKPOINT.value,
      eval_utterances=_EVAL_UTTS.value, steps=_STEPS.value, rank=_RANK.value, lr=_LR.value,
      per_snr=_PER_SNR.value)


if __name__ == "__main__":
  app.run(main)
