"""Helpers of scripts/checkov.sh, run with .venv-checkov's Python.

  checkov_report.py strip-conditions IN OUT
      Copy a CloudFormation JSON template (a SAM translation) without the resources' Condition
      attributes. checkov evaluates conditions against the parameters' defaults and silently
      skips every resource whose condition is false there (e.g. the whole REST proxy while
      ApiType defaults to http); without them it scans what every variant can create.

  checkov_report.py summary REPORT.json LABEL=PATH...
      Read `checkov -o json` output, print one line per scanned file (passed / failed / skipped,
      suppressed check ids) and every failed check with its resource and lines, and exit 1 if
      anything failed, a file could not be parsed, or a file was not scanned at all.
"""

import collections
import json
import sys


def strip_conditions(src, dst):
    with open(src) as f:
        template = json.load(f)
    for resource in template.get("Resources", {}).values():
        if isinstance(resource, dict):
            resource.pop("Condition", None)
    with open(dst, "w") as f:
        json.dump(template, f, indent=1)


def summary(report_path, labelled):
    with open(report_path) as f:
        text = f.read()
    try:
        data = json.loads(text)
    except ValueError:
        print("checkov: no JSON report (checkov failed to run):", text[:2000], file=sys.stderr)
        return 1
    reports = data if isinstance(data, list) else [data]
    # `checkov -o json` prints {"passed": 0, "failed": 0, ...} alone when nothing was scanned.
    reports = [r for r in reports if isinstance(r, dict) and "results" in r]
    labels = dict(item.rsplit("=", 1)[::-1] for item in labelled)  # scanned name -> label
    per_file = collections.OrderedDict((path, {"passed": 0, "failed": [], "skipped": []}) for path in labels)
    parse_errors = []

    def bucket(check):
        # checkov names the file relative to where it ran ("/template.yaml").
        path = check.get("file_path", "").lstrip("/")
        return per_file.setdefault(path, {"passed": 0, "failed": [], "skipped": []})

    for report in reports:
        results = report["results"]
        for check in results.get("passed_checks", []):
            bucket(check)["passed"] += 1
        for check in results.get("failed_checks", []):
            bucket(check)["failed"].append(check)
        for check in results.get("skipped_checks", []):
            bucket(check)["skipped"].append(check)
        parse_errors += results.get("parsing_errors", [])

    bad = findings = 0
    for path, counts in per_file.items():
        label = labels.get(path, path)
        total = counts["passed"] + len(counts["failed"]) + len(counts["skipped"])
        skipped = collections.Counter(c["check_id"] for c in counts["skipped"])
        skipped_text = ", ".join(f"{cid} x{n}" if n > 1 else cid for cid, n in sorted(skipped.items()))
        print(
            f"checkov: {label}: {counts['passed']} passed, {len(counts['failed'])} failed, "
            f"{len(counts['skipped'])} suppressed" + (f" ({skipped_text})" if skipped_text else "")
        )
        if total == 0:
            print(f"checkov: FAILED: {label}: no checks ran (not a CloudFormation template?)")
            bad += 1
        for c in counts["failed"]:
            lines = c.get("file_line_range") or []
            where = f"{path} lines {lines[0]}-{lines[1]}" if len(lines) == 2 else path
            print(f"checkov: FAILED: {c['check_id']} {c.get('check_name', '')}")
            print(f"    resource {c.get('resource', '?')} ({where})")
            bad += 1
            findings += 1
    for error in parse_errors:
        print(f"checkov: FAILED: could not parse {error}")
        bad += 1
    if findings:
        print(
            "checkov: fix each finding, or suppress it in the resource's Metadata "
            "(checkov: skip: - id: CKV_... comment: <the reason>) and list it in docs/deploy.md"
        )
    return 1 if bad else 0


def main(argv):
    if len(argv) == 4 and argv[1] == "strip-conditions":
        strip_conditions(argv[2], argv[3])
        return 0
    if len(argv) >= 3 and argv[1] == "summary":
        return summary(argv[2], argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
