"""TAP output for t/conformance/run.

t/run-all counts TAP lines, so every test becomes one line on the file
descriptor named by LLMUX_TAP_FD (run makes it its stdout):
    ok N - module: test[case]
    not ok N - module: test[case]
    ok N - module: test[case] # skip reason
followed, for failures, by a few '# ' lines with the assertion. pytest's own
report (full tracebacks) goes to stderr. The plan line is printed by run.
"""
import os

_tap = None
_count = 0
_results = {}


def _stream():
    global _tap
    if _tap is None:
        fd = os.environ.get("LLMUX_TAP_FD")
        _tap = os.fdopen(int(fd), "w", buffering=1, closefd=False) if fd else False
    return _tap


def _clean(text):
    return " ".join(str(text).split()).replace("#", "No.")


def _name(nodeid):
    path, _, rest = nodeid.partition("::")
    stem = os.path.basename(path)
    stem = stem[:-3] if stem.endswith(".py") else stem
    stem = stem[5:] if stem.startswith("test_") else stem
    return _clean(f"{stem}: {rest}" if rest else stem)


def _emit(ok, name, directive="", diag=""):
    global _count
    out = _stream()
    if not out:
        return
    _count += 1
    out.write(f"{'ok' if ok else 'not ok'} {_count} - {name}{directive}\n")
    lines = [l for l in diag.splitlines() if l.startswith("E ")] or diag.splitlines()[-3:]
    for line in lines[:8]:
        out.write(f"#   {line}\n")


def _skip_reason(report):
    r = report.longrepr
    if isinstance(r, tuple) and len(r) == 3:
        reason = r[2]
    else:
        reason = str(r)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def pytest_runtest_logreport(report):
    st = _results.setdefault(report.nodeid, {"failed": False, "skip": None, "diag": ""})
    if report.failed:
        st["failed"] = True
        st["diag"] += report.longreprtext + "\n"
    elif report.skipped and st["skip"] is None:
        st["skip"] = _skip_reason(report)
    if report.when == "teardown":
        del _results[report.nodeid]
        if st["failed"]:
            _emit(False, _name(report.nodeid), diag=st["diag"])
        elif st["skip"] is not None:
            _emit(True, _name(report.nodeid), directive=f" # skip {_clean(st['skip'])}")
        else:
            _emit(True, _name(report.nodeid))


def pytest_collectreport(report):
    if report.failed:
        _emit(False, _name(report.nodeid or "collection") + " (could not be collected)", diag=report.longreprtext)
