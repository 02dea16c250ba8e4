"""Every causal-LM type transformers can build tiny: classified, merged, loadable.

The types come from transformers' own registry (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES), so a
new architecture is tested as soon as transformers knows it. A type transformers cannot
build, run or save tiny from a config alone is skipped with the reason
(scripts/architectures-table.py writes the same results into docs/ARCHITECTURES.md).
"""

from __future__ import annotations

import shutil

import pytest

from registry_models import causal_lm_types, check_type


@pytest.fixture(scope="module", autouse=True)
def _quiet_transformers():
    import transformers

    before = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    yield
    transformers.logging.set_verbosity(before)


@pytest.mark.parametrize("model_type", causal_lm_types())
def test_type_is_classified_merged_and_loads(model_type, tmp_path, one_thread):
    result = check_type(model_type, tmp_path)
    shutil.rmtree(tmp_path, ignore_errors=True)
    if result.skipped:
        pytest.skip(result.skipped)
    assert result.unclassified == (), result.unclassified
    assert result.missing_in_child == (), result.missing_in_child
    assert result.child_finite
    assert result.child_differs
