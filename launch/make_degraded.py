r"""A reverberant and noisy copy of a manifest (a new acoustic domain for the same sentences):

  python -m launch.make_degraded --manifest=corpora/demo/test.jsonl --out=corpora/demo_noisy \
      --rt60=0.3,0.9 --drr_db=-3,6 --snr_db=0,15

Writes OUT/audio/<id>.wav, OUT/<name>.jsonl (same ids and transcripts), OUT/<name>_params.jsonl
(each utterance's RT60, DRR, SNR and noise color) and OUT/degrade.json. See
distill_jax/audio/degrade.py and distill_jax/data/degraded.py.
"""

from absl import app, flags

from distill_jax.audio import degrade
from distill_jax.data import degraded
from launch import common

_MANIFEST = flags.DEFINE_multi_string("manifest", None, "Manifest(s) to copy.", required=True)
_OUT = flags.DEFINE_string("out", None, "Output folder.", required=True)
_SEED = flags.DEFINE_integer("seed", 0, "Seed (each utterance's generator: (seed, id)).")
_RT60 = flags.DEFINE_list("rt60", ["0.3", "0.9"], "RT60 range in seconds (0,0: no reverb).")
_DRR = flags.DEFINE_list("drr_db", ["-3", "6"], "Direct-to-reverberant ratio range in dB.")
_SNR = flags.DEFINE_list("snr_db", ["0", "15"], "SNR range in dB (empty: no noise).")
_COLORS = flags.DEFINE_list("noise", list(degrade.NOISE_COLORS), "Noise colors.")


def _range(name, values):
  if len(values) != 2:
    raise app.UsageError(f"--{name}={','.join(values)}: give LOW,HIGH")
  return float(values[0]), float(values[1])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.setup_logging()
  cfg = degrade.DegradeConfig(
      rt60_range=_range("rt60", _RT60.value), drr_db_range=_range("drr_db", _DRR.value),
      snr_db_range=_range("snr_db", _SNR.value) if _SNR.value else None,
      noise_colors=tuple(_COLORS.value))
  for m in _MANIFEST.value:
    print(degraded.degrade_manifest(m, _OUT.value, cfg, _SEED.value))


if __name__ == "__main__":
  app.run(main)
