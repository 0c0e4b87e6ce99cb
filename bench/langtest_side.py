"""LangTest's side of bench/robustness.py, run by the Python of LangTest's own environment: its robustness tests on
a Hugging Face token-classification model directory and a CoNLL file. Prints one JSON object: per test, the
pass count and the number of test cases; and the seconds from generating the cases to the report.

    python bench/langtest_side.py MODEL_DIR sentences.conll uppercase add_typo ...
"""

from __future__ import annotations

import argparse
import json
import time

from langtest import Harness


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("conll")
    parser.add_argument("tests", nargs="+")
    args = parser.parse_args()
    config = {
        "tests": {
            "defaults": {"min_pass_rate": 0.75},
            "robustness": {name: {"min_pass_rate": 0.75} for name in args.tests},
        }
    }
    started = time.perf_counter()
    harness = Harness(
        task="ner",
        model={"model": args.model_dir, "hub": "huggingface"},
        data={"data_source": args.conll},
        config=config,
    )
    harness.generate().run()
    report = harness.report()
    seconds = time.perf_counter() - started
    tests = {
        row["test_type"]: {"passed": int(row["pass_count"]), "cases": int(row["pass_count"] + row["fail_count"])}
        for _, row in report.iterrows()
    }
    print(json.dumps({"tests": tests, "seconds": seconds}))


if __name__ == "__main__":
    main()
