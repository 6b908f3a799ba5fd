"""The README's main job: the demo teacher distilled into a small Conformer-CTC student on the
default synthetic corpus, beside the same student trained without the teacher.

  python -m launch.demo --config=configs/demo.py --workdir=runs/demo

Budget: corpus + training + evaluation in at most 20 minutes on a 2-core CPU.
"""

from configs import base
from configs.corpus import get_corpus_config


def get_config(arg=None):
  c = base.get_config(arg)
  c.name = "demo"
  c.data.corpus_dir = "corpora/demo"
  c.data.corpus = get_corpus_config("default")  # ~1 h train, 200 dev, 200 test utterances
  c.data.train = "corpora/demo/train.jsonl"
  c.data.dev = "corpora/demo/dev.jsonl"
  c.data.test = "corpora/demo/test.jsonl"
  c.data.dev_max_utterances = 100
  # Real human English read speech in the repository (data/real_english/SOURCES.md: LJ Speech,
  # LibriVox, CMU Sphinx test clips; evaluation only). A missing folder is an error.
  c.data.real_english_folders = tuple(
      f"data/real_english/{d}" for d in (
          "ljspeech_coqui_tts", "librivox_pocketsphinx", "cards_pocketsphinx",
          "goforward_pocketsphinx"))
  c.data.real_english = "corpora/real_english.jsonl"
  c.eval.splits = ("dev", "test", "real_english")
  # A 3-gram LM on the corpus's training text (no dev/test sentence), built by the demo.
  c.eval.lm = "corpora/demo/lm3.arpa"
  c.eval.lm_alpha = 0.5
  c.eval.lm_beta = 0.0

  c.model.conformer.update(dict(model_dim=144, num_layers=6, num_heads=4, conv_kernel=15,
                                subsampling_channels=32, dropout_rate=0.0))
  # SpecAugment and dropout slow early convergence too much for a CPU-minutes budget
  # (configs/demo_student.py notes the measurement).
  c.model.specaug_enabled = False
  # The teacher: configs/demo_teacher.py (13.4M-parameter wav2vec2 CTC) trained on the 20 h
  # corpus and exported as a Hugging Face folder into the repository; the job converts it as a
  # user converts a hub checkpoint, caches its posteriors over the training split, and trains a
  # KD student and a control (same steps, data and seed, no teacher).
  c.demo.teacher_hf = "teachers/demo_hf"
  # KD: CTC on the transcripts + T^2 KL at T=2 + a hidden-state term (L1 + cosine, DistilHuBERT)
  # from the student's last layer through a learned projection to the teacher's last layer (the
  # projection is also what the latent page draws the student through).
  c.distill.update(dict(alpha=1.0, beta=1.0, temperature=2.0, gamma=0.5,
                        layer_mapping="last_k", layer_k=1, hidden_loss="l1_cos"))
  # Two students share the budget: 48 s of padded audio a step for twice the updates of the
  # 96 s batch at about half the step time (~0.55 s on this 2-core machine), six padded shapes.
  # Budgets in steps only, so a seed gives the same table on any machine.
  c.data.buckets = (2.5, 4.0, 6.0, 8.0, 11.0, 15.5)
  c.data.batch_seconds = 48.0
  c.train.num_steps = 700
  c.train.max_wall_minutes = 0.0
  c.train.lr = 2e-3
  c.train.warmup_steps = 100
  c.train.eval_every = 700
  # Snapshots every 50 steps kept for the latent-trajectory page (launch.visualize).
  c.train.checkpoint_every = 50
  c.train.keep_every = 50
  # The job reports test and real English (greedy and beam + LM); dev is decoded (greedy) at
  # the end of training for the record. (Decoding dev too took 1.5 of the job's minutes.)
  c.eval.splits = ("test", "real_english")
  return c
