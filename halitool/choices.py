"""The values that options of several commands and library functions may take, in a module that imports
nothing heavy, so that the CLI can build its choice lists at start-up from the library's own constants."""

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")  # bf16: computed under torch.autocast; results are stored as float32
LATENTS = ("mean", "sample")  # what a level's features are: the posterior mean, or one seeded sample
KEEP = ("last", "best")  # which snapshot a training run's model.safetensors holds
