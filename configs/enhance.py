"""The causal hearing-aid denoiser (issue 27): 'recon' (reconstruction losses only) or 'gan'
(plus multi-resolution spectral and metric discriminators), the two arms of the ablation.
',finetune' starts from another run's generator (`--config.train.init_from=WORKDIR[@STEP]`) for
a short schedule: the ablation trains both arms that way from one reconstruction-only run.

  python -m launch.make_noise_lists --esc50_csv=datasets/esc10/esc10.csv \
      --esc50_audio=datasets/esc10/audio --train_folder=datasets/speech_commands/_silence_ \
      --out=datasets/noise
  N="--config.data.noise_train=datasets/noise/train.txt \
      --config.data.noise_dev=datasets/noise/dev.txt"
  python -m launch.train_enhance --config=configs/enhance.py:recon --workdir=runs/enh_recon $N
  python -m launch.train_enhance --config=configs/enhance.py:gan,finetune $N \
      --workdir=runs/enh_gan_ft --config.train.init_from=runs/enh_recon@1500
  python -m launch.train_enhance --config=configs/enhance.py:recon,finetune $N \
      --workdir=runs/enh_recon_ft --config.train.init_from=runs/enh_recon@1500

Framing: 24 ms analysis window, 4 ms hop, 8 ms synthesis window at 16 kHz: algorithmic latency
2R - 1 = 127 samples = 7.94 ms, lookahead 0 (distill_jax/enhance/stft.py).
"""

import ml_collections

VARIANTS = ("recon", "gan")


def get_config(arg=None) -> ml_collections.ConfigDict:
  variant, *mods = (arg or "recon").split(",")
  if variant not in VARIANTS or any(m != "finetune" for m in mods):
    raise ValueError(f"configs/enhance.py:{arg}: give one of {VARIANTS}, optionally followed "
                     "by ',finetune'")
  c = ml_collections.ConfigDict()
  c.name = f"enhance_{variant}"
  c.seed = 0
  c.progress = True

  c.model = ml_collections.ConfigDict(dict(
      sample_rate=16000, window=384, hop=64,  # analysis N, hop R (samples)
      num_linear=32, num_erb=32,  # bands: 32 bins below 1.3 kHz kept, 32 ERB bands above
      channels=(16, 32, 32), kernel_time=2, hidden=128, num_gru=2, compress=0.3,
      mask_bound=1.0))

  c.data = ml_collections.ConfigDict(dict(
      # Clean speech: project manifests (distill_jax/data/manifest.py); speakers split by file.
      clean_train="datasets/speechocean762/train.jsonl",
      clean_dev="datasets/speechocean762/dev.jsonl",
      # Noise: a folder of audio files or a text file listing one path per line (relative to
      # the list's folder). Dev noises must be files never used in training.
      noise_train="",
      noise_dev="",
      segment_seconds=2.0,  # training crop
      batch_size=8,
      snr_range=(-5.0, 20.0),
      level_range=(-35.0, -15.0),  # mixture RMS in dBFS
      speech_level="active",  # 'active' | 'rms' (data/mixing.py)
      dev_snrs=(-5.0, 0.0, 5.0, 10.0, 15.0),
      dev_mixtures=50,  # per evaluation (seeded: the same mixtures every time)
      dev_seconds=4.0,
      dev_seed=1234,
      max_clean=0,  # > 0: use only the first N clean utterances (smoke runs)
  ))

  c.loss = ml_collections.ConfigDict(dict(
      stft_weight=1.0, sisdr_weight=0.01,
      resolutions=((512, 128, 512), (256, 64, 256), (128, 32, 128))))

  c.gan = ml_collections.ConfigDict(dict(
      enabled=variant == "gan",
      mrd=True, mrd_resolutions=((512, 128, 512), (256, 64, 256), (128, 32, 128)),
      metric=True, proxy="stoi",  # 'pesq' | 'stoi' | 'sisdr' (enhance/metrics.py)
      metric_on_noisy=True, channels=16,
      adv_weight=1.0, fm_weight=2.0, metric_weight=1.0))

  c.train = ml_collections.ConfigDict(dict(
      num_steps=20000, lr=1e-3, d_lr=2e-4, warmup_steps=500, final_lr_ratio=0.05,
      b1=0.8, b2=0.99, weight_decay=0.0, grad_clip=5.0,
      log_every=50, eval_every=1000, checkpoint_every=1000, keep_last=3,
      init_from=""))  # 'WORKDIR[@STEP]': the generator from another run (enhance/loop.py)
  if mods:
    # The ablation's two arms: the same short schedule from one reconstruction-only checkpoint,
    # with (gan) or without (recon) the adversarial terms; give --config.train.init_from.
    c.name += "_finetune"
    c.train.update(num_steps=500, lr=2e-4, warmup_steps=25, eval_every=250,
                   checkpoint_every=250)
  return c
