#!/usr/bin/env bash
# The integration tests (kpark.dask on a real LocalCluster, kpark.joblib on the
# real joblib), in the active virtual environment: installs kpark with its
# dask and joblib extras, then runs the tests with KPARK_REQUIRE_INTEGRATIONS=1,
# so a missing distributed or joblib fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q ".[test,dask,joblib]"
python -c 'import distributed, joblib; print("distributed", distributed.__version__, "joblib", joblib.__version__)'
KPARK_REQUIRE_INTEGRATIONS=1 KPARK_SPIN=0 python -m pytest -q \
    tests/test_dask.py tests/test_joblib.py tests/test_executor_compat.py
