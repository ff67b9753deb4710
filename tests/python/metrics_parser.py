"""Parses kassa's /metrics with PyPI prometheus_client's OpenMetrics parser, which
refuses what the format forbids (a missing `# EOF`, a sample outside its family, a
counter without `_total`, a histogram without `+Inf`). Reads {"text": exposition} on
stdin and answers JSON: [{"name", "type", "samples": [{"name", "labels", "value"}]}].
"""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main():
    text = json.load(sys.stdin)["text"]
    families = []
    for family in text_string_to_metric_families(text):
        families.append(
            {
                "name": family.name,
                "type": family.type,
                "samples": [
                    {"name": s.name, "labels": dict(s.labels), "value": s.value}
                    for s in family.samples
                ],
            }
        )
    json.dump(families, sys.stdout)


if __name__ == "__main__":
    main()
