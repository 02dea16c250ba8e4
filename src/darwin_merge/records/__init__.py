"""The files a run writes, as versioned pydantic models (one schema per file).

Producers build a record and write `record_json(record)`; readers get a parsed record from
`read_record` (a `RecordError`, one line, for a file that is not one). Files written
before `schema_version` existed still parse: the field defaults to the current version.
"""

from .base import (
    SCHEMA_VERSION,
    Record,
    parse_record,
    read_optional,
    read_record,
    record_json,
    record_text,
)
from .eval import EvalResults
from .fine_tune import FineTuneRecord
from .health import HealthRecord, HealthVerdict
from .merge import (
    MergeOptions,
    MergeParents,
    MergeRecord,
    SharesTensorRow,
    TensorRow,
    VocabularyRecord,
)
from .scan import SCAN_VERSION, ScanRecord
from .search import (
    METHOD_WORDS,
    BaselinePoint,
    BaselineSearch,
    Best,
    HealthRejected,
    Holdout,
    HoldoutTask,
    Phase1Record,
    Phase1Summary,
    Phase2Summary,
    Stake,
    StandardValues,
    SummaryRecord,
    TopGenome,
    TrialRow,
    Trials,
)

__all__ = ["SCAN_VERSION", "SCHEMA_VERSION", "BaselinePoint", "BaselineSearch", "Best",
           "EvalResults", "FineTuneRecord", "HealthRecord", "HealthRejected", "HealthVerdict",
           "Holdout", "HoldoutTask", "METHOD_WORDS", "MergeOptions", "MergeParents", "MergeRecord",
           "Phase1Record",
           "Phase1Summary", "Phase2Summary", "Record", "ScanRecord", "Stake", "StandardValues",
           "SharesTensorRow", "SummaryRecord", "TensorRow", "TopGenome", "TrialRow", "Trials",
           "VocabularyRecord",
           "parse_record", "read_optional", "read_record", "record_json", "record_text"]
