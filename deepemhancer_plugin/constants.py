"""Names shared by the plugin: Scipion variables, the weights package, output names, form choices."""

# Scipion variables (scipion.conf or the environment).
MODELS_DIR_VAR = "DEEPEMHANCER_MODELS_DIR"  # the engine's model folder; empty: the engine's default
DEVICE_VAR = "DEEPEMHANCER_DEVICE"  # default device of new runs: GPU ids such as "0" or "0,1", or "cpu"
OFFICIAL_WEIGHTS_VAR = "DEEPEMHANCER_OFFICIAL_WEIGHTS"  # a folder of deepEMhancer_*.hd5; empty: search xmipp
WEIGHTS_HOME_VAR = "DEEPEMHANCER_WEIGHTS_HOME"  # where `scipion3 installb deepemhancerWeights` puts them

DEFAULT_DEVICE = "0"
CPU_DEVICE = "cpu"

# The official weights as a Scipion package (the engine's download, converted once for every user).
WEIGHTS_PACKAGE = "deepemhancerWeights"
WEIGHTS_VERSION = "1.0"
WEIGHTS_MODELS_SUBDIR = "models"  # converted models (.json + .safetensors) inside the package folder

# Folders of the official weights in Scipion's xmipp model bundle, newest first.
XMIPP_MODEL_BUNDLES = ("deepEMhancer_v016", "deepEMhancer")

# Outputs.
OUTPUT_VOLUME = "outputVolume"
OUTPUT_FSC = "outputFSC"
OUTPUT_MASK = "outputMask"
OUTPUT_CONFIDENCE = "outputConfidence"
OUTPUT_VOLUMES = "outputVolumes"  # enhance on a set of volumes

# Input choices shared by the protocols that take half maps.
INPUT_VOLUME = 0  # one Volume (its map, or the half maps attached to it)
INPUT_TWO_HALVES = 1  # two Volumes, one per half map
INPUT_SET = 2  # enhance only: a SetOfVolumes, each volume as INPUT_VOLUME

# Enhance: normalisation of the input.
NORM_AUTO = 0
NORM_NOISE_STATS = 1
NORM_MASK = 2
NORMALIZATION_CHOICES = ["automatic", "noise statistics", "binary mask"]

PRECISIONS = ["fp32", "tf32", "bf16", "fp16"]
AUGMENTATIONS = ["1", "8", "24"]  # predictions of the map under cube symmetries, for the confidence map
BLENDINGS = ["gaussian", "count"]  # the first is the default

RECOMMENDED_MODEL = "recommended"  # tightTarget when installed, else the bundled model that fits the input
DEFAULT_MODEL = RECOMMENDED_MODEL
DEFAULT_MASKED_MODEL = "masked"

# Tight mask: source and threshold rule.
MASK_FROM_MAP = 0
MASK_FROM_MODEL = 1
THRESHOLD_AUTO = 0
THRESHOLD_DENSITY = 1
THRESHOLD_VOLUME = 2
THRESHOLD_CHOICES = ["automatic", "density threshold", "enclosed volume"]

# Files written in each run's extra folder.
ENHANCED_FILE = "enhanced.mrc"
ENHANCED_HALF_FILES = ("enhanced_half1.mrc", "enhanced_half2.mrc")
CONFIDENCE_FILE = "confidence.mrc"
ENHANCED_SET_FILE = "enhanced_{:06d}.mrc"  # enhance on a set: the volume of this id
SET_OUTCOMES_FILE = "enhanced_set.json"  # enhance on a set: the file written, or the error, of each volume
HALVES_CHECK_FILE = "halves_check.json"
AVERAGE_FILE = "average.mrc"
SHARPENED_FILE = "sharpened.mrc"
MASK_FILE = "mask.mrc"
MASK_INFO_FILE = "mask.json"
FSC_FILE = "fsc.json"
SHARPENING_FILE = "sharpening.json"
SLICES_PNG = "comparison_slices.png"
FSC_PNG = "comparison_fsc.png"
HALVES_CHECK_PNG = "comparison_halves_check.png"
CHIMERAX_SCRIPT = "comparison.cxc"
VIEWER_AVERAGE_FILE = "comparison_average.mrc"
