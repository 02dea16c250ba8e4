"""The name of every file and folder darwin writes, spelled once (docs/ARCHITECTURE.md).

A record's model names its file from here (`SummaryRecord.file_name`); the writers and
readers of run folders, child folders and benchmark folders import these names rather than
spell them.
"""

# A child folder: a merged model (`darwin merge`, an evolve run's child/).
MERGE_RECORD = "darwin_merge.json"  # how it was merged: options, parents, plan rows
CARD = "README.md"  # its model card

# A run folder (`darwin evolve`, `darwin demo run`).
CHILD_DIR = "child"
SCAN_DIR = "scan"
HEALTH_DIR = "health"
HOLDOUT_DIR = "holdout"
SUMMARY = "summary.json"
TRIALS = "trials.json"
PHASE1 = "phase1.json"
BEST_GENOME = "best_genome.yaml"
RECIPE = "recipe.yaml"  # the search's settings, to run it again
RESULTS = "RESULTS.md"  # the demo's results page
REPORT = "report.html"
EVOLUTION_PICTURE = "evolution.png"

# A scan folder (`darwin scan`, an evolve run's scan/).
SCAN = "scan.json"
MDS_PICTURE = "mds_father_mother.png"
MRI_PICTURE = "mri_ratio.png"
ATTRIBUTION_PICTURE = "attribution.png"

# A health folder (`darwin health`, an evolve run's health/).
HEALTH = "health.json"
HEALTH_PICTURE = "health.png"

# The card's scratch pictures (drawn for the card, not kept in a run folder).
RATIO_PROFILE_PICTURE = "ratio_profile.png"

# A benchmark folder (`darwin bench quality`): one folder per problem, the tables above.
PROBLEM_RESULT = "result.json"
QUALITY_TABLE = "quality.md"
QUALITY_PICTURE = "quality.png"

# A fine-tune's folder (the demo's specialists and the tiny trio): how it was trained.
FINE_TUNE_RECORD = "darwin_mother.json"
TINY_RECORD = "darwin_tiny.json"
