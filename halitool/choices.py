"""The values that options of several commands and library functions may take, in a module that imports
nothing heavy, so that the CLI can build its choice lists at start-up from the library's own constants."""

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")  # bf16: computed under torch.autocast; results are stored as float32
LATENTS = ("mean", "sample")  # what a level's features are: the posterior mean, or one seeded sample
KEEP = ("last", "best")  # which snapshot a training run's model.safetensors holds

SPLITS = {"train": 0, "valid": 1, "test": 2}  # a data set's splits and their codes in files (split[i])
SPLIT_NAMES = {v: k for k, v in SPLITS.items()}
SPLIT_CHOICES = ("all", *SPLITS)  # what a command may select: one split, or every row

# halitool.models.config.ARCHITECTURES and OBJECTIVES stay where they are: that module imports nothing heavy.
PROBE_METRICS = ("accuracy", "balanced_accuracy")  # what the attribute probe selects C by
CLASS_WEIGHTS = ("none", "balanced")
DEFAULT_C_GRID = "1e-4:1e2:10"
PROBE_SOLVERS = ("torch", "sklearn")  # the keys of halitool.probe.SOLVERS
DISENTANGLEMENT_BINS = 20  # halitool.disentanglement.DEFAULT_BINS: disentanglement_lib's num_bins
