"""distill-jax: distilling wav2vec 2.0 teachers into small speech recognizers, in JAX/Flax."""

__version__ = "0.1.0"
