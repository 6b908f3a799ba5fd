"""Defaults shared by every experiment. Experiment configs call `base.get_config()` and override.

Configs are locked: `--config.train.lrr=1e-3` (a misspelled key) is an error naming the key.
"""

import ml_collections


def get_config(arg=None) -> ml_collections.ConfigDict:
  del arg
  c = ml_collections.ConfigDict()
  c.name = "base"
  c.seed = 0
  c.progress = True
  c.parallel = "shard_map"  # data parallelism over all devices: 'shard_map' | 'pmap'
  # Multi-host (launch/train.py; one process per host, README "Devices"):
  # jax.distributed.initialize with these; ""/0/-1 = detected (TPU pods, SLURM, Open MPI).
  c.distributed = ml_collections.ConfigDict(dict(
      enabled=False, coordinator="", num_processes=0, process_id=-1,
      cpu_collectives=""))  # 'gloo' for CPU hosts (and the two-process test)

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.vocab = ""  # path to a vocab.json; empty = the wav2vec2 LibriSpeech vocabulary

  c.data = ml_collections.ConfigDict()
  c.data.train = "corpora/demo/train.jsonl"
  c.data.dev = "corpora/demo/dev.jsonl"
  c.data.test = "corpora/demo/test.jsonl"
  c.data.dev_max_utterances = 0  # 0 = all
  c.data.buckets = (2.0, 3.0, 4.0, 5.0, 6.5, 8.0, 10.0, 12.5, 16.0)  # seconds, upper bounds
  c.data.batch_seconds = 160.0  # padded audio seconds per global batch
  c.data.prefetch = 4
  c.data.min_seconds = 0.1  # shorter utterances are counted skips (too_short)
  c.data.max_seconds = 0.0  # > 0: longer ones are skipped (too_long); 0 = longest bucket
  c.data.audio_in_memory = "auto"  # 'auto' (in memory up to 20 h) | 'yes' | 'no' (per batch)
  c.data.language = "en"  # text normalization (text.normalize); e.g. 'de_de' for FLEURS

  c.model = ml_collections.ConfigDict()
  c.model.head = "ctc"  # 'ctc' | 'attention' | 'transducer'
  c.model.head_dropout = 0.0
  # Attention and transducer heads: an auxiliary CTC head on the encoder (joint CTC training
  # with weight ctc_weight = lambda, and the frame-level KL of distillation).
  c.model.aux_ctc = False
  c.model.ctc_weight = 0.0  # L = lambda CTC + (1 - lambda) attention (or + lambda CTC: RNN-T)
  c.model.label_smoothing = 0.1  # attention cross-entropy
  c.model.fastemit_lambda = 0.0  # RNN-T FastEmit regularization
  c.model.attention_decoder = ml_collections.ConfigDict(dict(
      kind="lstm", attention="additive", dim=144, num_layers=1, num_heads=4, ff_mult=4,
      dropout_rate=0.0))  # kind 'lstm' | 'transformer'; attention 'additive' | 'dot'
  c.model.transducer = ml_collections.ConfigDict(dict(
      predictor="lstm", pred_dim=144, pred_layers=1, joint_dim=144,
      dropout_rate=0.0))  # predictor 'lstm' | 'stateless'
  c.model.encoder = "conformer"
  c.model.frontend = ml_collections.ConfigDict(dict(
      sample_rate=16000, num_mels=80, window_ms=25.0, hop_ms=10.0, n_fft=512,
      preemphasis=0.0, dither=0.0, fmin=0.0, fmax=None, htk=False, mel_norm="slaney",
      log_floor=1e-6))
  c.model.specaug_enabled = True
  c.model.specaug = ml_collections.ConfigDict(dict(
      num_freq_masks=2, freq_mask_width=27, num_time_masks=10, time_mask_max_ratio=0.05))
  # Vocal tract length perturbation: per-utterance spectral warp, a cheap stand-in for voices.
  c.model.vtlp_enabled = False
  c.model.vtlp = ml_collections.ConfigDict(dict(min_warp=0.85, max_warp=1.15))
  # Speed perturbation of the waveform (audio/speed.py), per utterance in the jitted step: the
  # wav2vec2 model's voice augmentation (VTLP needs the log-mel front end).
  c.model.speed_perturb_enabled = False
  c.model.speed_perturb = ml_collections.ConfigDict(dict(min_factor=0.9, max_factor=1.1))
  c.model.conformer = ml_collections.ConfigDict(dict(
      model_dim=144, num_layers=8, num_heads=4, ff_mult=4, conv_kernel=15, subsampling=4,
      subsampling_channels=64, dropout_rate=0.1, positions="rotary", causal=False,
      scan_layers=False))
  c.model.transformer = ml_collections.ConfigDict(dict(
      model_dim=144, num_layers=8, num_heads=4, ff_mult=4, subsampling=4,
      subsampling_channels=64, dropout_rate=0.1, positions="rotary", causal=False,
      scan_layers=False))
  c.model.lstm = ml_collections.ConfigDict(dict(
      model_dim=256, num_layers=4, bidirectional=True, subsampling=4,
      subsampling_channels=64, dropout_rate=0.1))

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 2000
  c.train.max_wall_minutes = 0.0  # > 0: stop (with a checkpoint and an eval) after this long
  # > 0: stop at this step (checkpoint + eval) with the schedule still that of num_steps (the
  # demo's control student stops where the KD student did).
  c.train.stop_at_step = 0
  # A run folder whose latest weights start this run (fresh optimizer state and schedule: a
  # second training phase, or fine-tuning); its model config must equal this one.
  c.train.init_from = ""
  # Regexes over param paths ('encoder/layers_0/fc1/kernel', matched at the start) that the
  # optimizer never updates (e.g. ('encoder/',) for the Whisper CTC head: configs/whisper_head.py).
  c.train.frozen_params = ()
  c.train.lr = 2e-3
  c.train.final_lr_ratio = 0.02
  c.train.warmup_steps = 300
  c.train.weight_decay = 1e-3
  c.train.b1 = 0.9
  c.train.b2 = 0.98
  c.train.grad_clip = 5.0
  # >1: each device's batch runs as this many micro-batches (summed gradients, one update)
  c.train.grad_accum_steps = 1
  c.train.log_every = 25
  c.train.eval_every = 500
  c.train.checkpoint_every = 250
  c.train.keep_last = 2
  c.train.keep_best = 1
  # Snapshots kept besides the last/best ones (e.g. for launch.visualize's checkpoint slider):
  # every checkpoint whose step is a multiple of keep_every (> 0), and the steps in keep_steps
  # (those steps are also saved when they are not multiples of checkpoint_every).
  c.train.keep_every = 0
  c.train.keep_steps = ()
  c.train.report_splits = ()  # config.data entries also decoded at each eval (curves only)

  # Knowledge distillation (launch/train.py): on when `teacher` is set.
  c.distill = ml_collections.ConfigDict()
  c.distill.teacher = ""  # converted teacher folder (launch.convert_teacher) or an HF folder
  c.distill.cache = ""  # offline teacher cache folder (data/teacher_cache.py); "" = online
  c.distill.alpha = 1.0  # CTC on the hard labels
  c.distill.beta = 1.0  # T^2 KL(teacher^T || student^T)
  c.distill.gamma = 0.0  # hidden-state loss (0 = off)
  c.distill.temperature = 2.0
  c.distill.blank_weight = 1.0  # < 1 down-weights frames where the teacher is sure of blank
  c.distill.blank_threshold = 0.9
  c.distill.frame_ratio = 0  # teacher frames per student frame; 0 = from the frame hops
  # Hard CTC targets: 'ground_truth' (the manifest's text) | 'teacher' (the teacher's greedy CTC
  # transcript, per step: a Whisper teacher's CTC head) | 'whisper' (Whisper's decoded
  # transcripts: config.data.train must be a manifest from launch/whisper_transcribe.py, which
  # also drops utterances whose WER against their reference is too high; checked at start).
  c.distill.hard_labels = "ground_truth"
  c.distill.layer_mapping = "last_k"  # | 'every_k' | 'explicit'
  c.distill.layer_k = 1
  c.distill.layer_pairs = ()  # ((student_layer, teacher_layer), ...) for 'explicit'
  c.distill.hidden_loss = "l1_cos"  # | 'nmse'
  # Adapters of an adapted teacher (launch/adapt.py's WORKDIR/adapters), merged into its
  # weights when it is loaded; "" = the teacher as converted.
  c.distill.teacher_adapter = ""

  # Post-training adaptation (launch/adapt.py, distill_jax/jobs/adapt.py).
  c.adapt = ml_collections.ConfigDict()
  c.adapt.target = "teacher"  # 'teacher' (config.distill.teacher) | 'student'
  c.adapt.mode = "lora"  # 'lora' | 'qlora' (NF4 base) | 'full' (every parameter)
  c.adapt.student_workdir = ""  # target 'student': the CTC student run to personalize
  c.adapt.train = ""  # manifest of the new domain (or of the voice)
  c.adapt.eval = ml_collections.ConfigDict()  # {name: manifest}: WER before and after
  c.adapt.decoders = ("greedy",)  # each evaluates every c.adapt.eval set (config.eval's LM)
  c.adapt.max_train_seconds = 300.0  # target 'student': at most 5 minutes of the voice
  c.adapt.num_steps = 200
  c.adapt.lr = 1e-3
  c.adapt.final_lr_ratio = 0.1
  c.adapt.warmup_steps = 20
  c.adapt.weight_decay = 0.0
  c.adapt.b1 = 0.9
  c.adapt.b2 = 0.999
  c.adapt.grad_clip = 1.0
  c.adapt.rank = 8
  c.adapt.alpha = 16.0
  c.adapt.dropout = 0.05
  c.adapt.targets = (r".*attention/(q|k|v|out)_proj/kernel",
                     r".*feed_forward/(intermediate|output)_dense/kernel")
  c.adapt.quantize = (r".*kernel",)  # 'qlora': base params stored as NF4
  c.adapt.seed = 0

  # The main job (launch/demo.py, distill_jax/jobs/demo.py): teacher -> KD student + control.
  c.demo = ml_collections.ConfigDict()
  c.demo.teacher_hf = ""  # the teacher's Hugging Face folder; "" = one student, no distillation
  c.demo.teacher_cache = True  # run the teacher once over the train split (False: online)
  c.demo.control = True  # also train the student without KD for the same steps
  c.demo.rtf_threads = 1  # real-time factor on this many CPUs (launch/rtf.py); 0 = not measured
  c.demo.rtf_split = "test"

  c.eval = ml_collections.ConfigDict()
  c.eval.splits = ("test",)  # names of c.data entries evaluated by launch/eval.py
  c.eval.decoder = "greedy"  # 'greedy' | 'beam' | 'beam_lm' (n-gram shallow fusion)
  c.eval.beam_size = 32
  # Attention and transducer students ('greedy' | 'beam'): output tokens per encoder frame at
  # most (attention), GNMT length penalty alpha (attention beam), symbols per frame (RNN-T
  # greedy; the beam search emits at most one per frame).
  c.eval.max_length_ratio = 1.0
  c.eval.length_penalty = 0.6
  c.eval.max_symbols_per_frame = 3
  c.eval.lm = ""  # ARPA file for 'beam_lm' (python -m launch.make_lm)
  c.eval.lm_order = 3  # n-gram order when the demo builds config.eval.lm
  c.eval.lm_alpha = 0.5  # LM weight
  c.eval.lm_beta = 1.0  # word insertion bonus
  return c
