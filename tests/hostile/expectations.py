"""What the loader must say about each file in ``corpus/``: file -> (line, field, message).

``E(line, field, fragment)``: one of the errors about the file must be at exactly that
line, with exactly that field path (``None``: a YAML-level problem that has no field,
or a file without lines), and contain ``fragment``. A field ending in ``*`` matches by
prefix (the path of a 5,000-character key is shortened). ``names`` are the tasks the
valid version of the file declares; every file here is checked against a table that
holds them (see ``_harness.Scene``). The table is also the index of README.md.
"""

from __future__ import annotations

from tests.hostile._harness import Expect as E

V2 = ("victim", "victim-2", "victim-3")

EXPECT: dict[str, E] = {
    # ------------------------------------------------------------ YAML syntax errors
    "syntax-missing-colon.yaml": E(7, None, "mapping values are not allowed"),
    "syntax-unclosed-flow-sequence.yaml": E(10, None, "did not find expected ',' or ']'"),
    "syntax-unclosed-flow-mapping.yaml": E(6, None, "did not find expected ',' or '}'"),
    "syntax-unterminated-double-quote.yaml": E(9, None, "while parsing a block mapping at line 6"),
    "syntax-unterminated-single-quote.yaml": E(11, None, "quoted scalar at line 7, column 13"),
    "syntax-mapping-value-in-plain-scalar.yaml": E(6, None, "mapping values are not allowed"),
    "syntax-bad-dedent.yaml": E(5, None, "did not find expected key"),
    "syntax-sequence-item-in-mapping.yaml": E(7, None, "did not find expected key"),
    "syntax-undefined-alias.yaml": E(10, None, "found undefined alias"),
    "syntax-unknown-escape.yaml": E(9, None, "found unknown escape character"),
    "syntax-yaml-directive-2.yaml": E(1, None, "found incompatible YAML document"),
    "syntax-block-scalar-bad-indicator.yaml": E(9, None, "while scanning a block scalar"),
    "syntax-flow-end-without-start.yaml": E(9, None, "did not find expected node content"),
    "syntax-error-in-third-document.yaml": E(32, None, "did not find expected ',' or ']'", V2),
    "syntax-control-character.yaml": E(9, None, "control characters are not allowed (byte 0x07)"),
    "syntax-anchor-on-alias.yaml": E(10, None, "did not find expected key"),
    "syntax-simple-key-over-1024-chars.yaml": E(6, None, "longer than 1024 characters"),
    "syntax-document-end-then-garbage.yaml": E(12, None, "did not find expected <document start>"),
    # ------------------------------------------------------------------------- tabs
    "tab-indentation.yaml": E(4, None, "tabs cannot be used for indentation"),
    "tab-after-spaces.yaml": E(7, None, "tabs cannot be used for indentation"),
    "tab-before-sequence-item.yaml": E(9, None, "tabs cannot be used for indentation"),
    # ------------------------------------------------------------------ wrong types
    "type-suspend-quoted-yes.yaml": E(10, "spec.suspend", "expected a boolean (true or false)"),
    "type-suspend-integer.yaml": E(10, "spec.suspend", "got an integer"),
    "type-schedule-integer.yaml": E(
        6, "spec.schedule", "expected a string or a list of strings, got an integer"
    ),
    "type-schedule-list.yaml": E(6, "spec.schedule[0]", "expected a string, got an integer"),
    "type-command-string.yaml": E(9, "spec.run.command", "expected a list, got a string"),
    "type-command-item-integer.yaml": E(9, "spec.run.command[1]", "expected a string"),
    "type-metadata-list.yaml": E(4, "metadata", "expected a mapping, got a list"),
    "type-spec-null.yaml": E(5, "spec", "expected a mapping, got null"),
    "type-label-norway-problem.yaml": E(5, "metadata.labels.country", "got a boolean"),
    "type-label-value-integer.yaml": E(6, "metadata.labels.tier", "got an integer"),
    "type-retries-limit-string.yaml": E(10, "spec.retries.limit", "expected an integer"),
    "type-max-catch-up-float.yaml": E(11, "spec.maxCatchUp", "expected an integer, got a number"),
    "type-env-value-integer.yaml": E(11, "spec.run.env.PORT", "{fromEnv: ...} or {fromFile"),
    "type-document-is-list.yaml": E(1, None, "a manifest must be a mapping"),
    "type-document-is-scalar.yaml": E(2, None, "not a string"),
    "type-name-is-date.yaml": E(4, "metadata.name", "expected a string, got a date"),
    "type-http-headers-list.yaml": E(11, "spec.run.http.headers", "expected a mapping"),
    "kind-missing.yaml": E(1, "kind", 'missing required field "kind"'),
    "kind-unknown.yaml": E(2, "kind", 'unknown kind "CronJob"'),
    "apiversion-wrong.yaml": E(1, "apiVersion", 'unsupported apiVersion "reconciler/v2"'),
    "name-invalid-characters.yaml": E(4, "metadata.name", "should match pattern"),
    "name-too-long.yaml": E(4, "metadata.name", "at most 63 characters"),
    "name-huge.yaml": E(4, "metadata.name", "at most 63 characters"),
    "name-empty.yaml": E(4, "metadata.name", "at least 1 character"),
    "name-missing.yaml": E(4, "metadata.name", 'missing required field "name"'),
    # ------------------------------------------------------- unknown fields, run shape
    "unknown-field-typo.yaml": E(10, "spec.timout", 'did you mean "timeout"?'),
    "unknown-top-level-field.yaml": E(11, "status", 'unknown field "status"'),
    "unknown-run-field.yaml": E(9, "spec.run.comand", 'did you mean "command"?'),
    "unknown-metadata-namespace.yaml": E(5, "metadata.namespace", 'unknown field "namespace"'),
    "run-two-targets.yaml": E(9, "spec.run", "exactly one of command, shell, http or python"),
    "run-no-target.yaml": E(9, "spec.run", "exactly one of command, shell, http or python"),
    "run-empty-command.yaml": E(9, "spec.run.command", "at least 1 item"),
    "run-relative-working-dir.yaml": E(10, "spec.run.workingDir", "should match pattern '^/'"),
    "run-from-file-relative.yaml": E(11, "spec.run.env.TOKEN.fromFile", "pattern '^/'"),
    "run-http-file-url.yaml": E(10, "spec.run.http.url", "should match pattern"),
    "run-python-without-function.yaml": E(9, "spec.run.python", "should match pattern"),
    "run-env-name-invalid.yaml": E(11, "spec.run.env.MY-VAR", "invalid key"),
    "label-key-invalid.yaml": E(6, 'metadata.labels["team name"]', "invalid key"),
    # ------------------------------------------------------ huge strings, deep nesting
    "huge-schedule-string.yaml": E(6, "spec.schedule", "at most 1024 characters"),
    "huge-explicit-key.yaml": E(10, "spec.xxxxxxxxxx*", "unknown field"),
    "huge-duration-string.yaml": E(10, "spec.timeout", "invalid duration"),
    "deep-flow-nesting.yaml": E(5, None, "nesting is deeper than 64 levels"),
    "deep-block-nesting.yaml": E(67, None, "nesting is deeper than 64 levels"),
    # ------------------------------------------------------------------- alias bombs
    "alias-billion-laughs.yaml": E(10, None, "aliases expand to more than 10,000 nodes"),
    "alias-wide-fanout.yaml": E(26, None, "aliases expand to more than 10,000 nodes"),
    "alias-recursive.yaml": E(5, None, "recursive alias"),
    "alias-merge-key.yaml": E(7, None, "merge keys (<<) are not supported"),
    # -------------------------------------------------------------------------- tags
    "tag-python-object-apply.yaml": E(9, None, "!!python/object/apply:os.system is not allowed"),
    "tag-python-name.yaml": E(9, None, "!!python/name:os.system is not allowed"),
    "tag-python-module-top-level.yaml": E(1, None, "manifests are data, not Python objects"),
    "tag-local-custom.yaml": E(11, None, "tag !Ref is not allowed"),
    "tag-binary.yaml": E(9, None, "tag !!binary is not allowed"),
    "tag-set.yaml": E(9, None, "tag !!set is not allowed"),
    "tag-omap.yaml": E(5, None, "tag !!omap is not allowed"),
    "tag-str-on-mapping.yaml": E(5, None, "tag !!str cannot be used on a mapping"),
    "tag-int-invalid-value.yaml": E(10, None, "invalid !!int value 'ten'"),
    "tag-verbatim.yaml": E(9, None, "tag:evil.example,2024:rce is not allowed"),
    "tag-directive-handle.yaml": E(11, None, "tag:evil.example,2024:exec is not allowed"),
    # ----------------------------------------------------- binary junk and encodings
    "binary-random-bytes.yaml": E(1, None, "file contains NUL bytes"),
    "binary-gzip.yaml": E(1, None, "file contains NUL bytes"),
    "encoding-utf16-le-no-bom.yaml": E(1, None, "UTF-16 without a byte order mark"),
    "encoding-utf16-le-bom-with-error.yaml": E(10, "spec.timout", 'unknown field "timout"'),
    "encoding-utf16-be-bom-truncated.yaml": E(10, None, "invalid UTF-16 text"),
    "encoding-utf32-be-bom-with-error.yaml": E(7, "spec.timeZone", "Europe/Berln"),
    "encoding-utf8-bom-with-error.yaml": E(7, "spec.timeZone", "Europe/Berln"),
    "encoding-latin1.yaml": E(5, None, "invalid start byte (byte 0xf6); save the file as UTF-8"),
    "encoding-cr-line-endings.yaml": E(5, None, "invalid UTF-8"),
    "encoding-unicode-line-separators.yaml": E(5, None, "invalid UTF-8"),
    "encoding-utf8-surrogate.yaml": E(9, None, "invalid Unicode character (U+D800)"),
    "encoding-utf8-overlong.yaml": E(9, None, "invalid UTF-8: invalid start byte (byte 0xc0)"),
    # --------------------------------------------------- duplicate keys and names
    "dupkey-spec-twice.yaml": E(11, None, 'duplicate key "spec" (first defined at line 5)'),
    "dupkey-schedule-twice.yaml": E(10, None, 'duplicate key "schedule" (first defined at line 6'),
    "dupkey-flow-mapping.yaml": E(5, None, 'duplicate key "team"'),
    "dupkey-quoted-and-plain.yaml": E(12, None, 'duplicate key "MODE" (first defined at line 11'),
    "dupname-same-file.yaml": E(15, "metadata.name", "declared more than once"),
    "dupname-across-files.yaml": E(
        4, "metadata.name", "00-bystander.yaml:4)", whole_dir=True
    ),
    # ------------------------------------------------------------------------- cron
    "cron-minute-60.yaml": E(6, "spec.schedule", "value 60 out of range 0-59"),
    "cron-hour-24.yaml": E(6, "spec.schedule", "value 24 out of range 0-23"),
    "cron-feb-31.yaml": E(6, "spec.schedule", "never fires: day 31 does not exist in February"),
    "cron-feb-30-and-31.yaml": E(6, "spec.schedule", "never fires"),
    "cron-month-13.yaml": E(6, "spec.schedule", "value 13 out of range 1-12"),
    "cron-day-of-week-8.yaml": E(6, "spec.schedule", "value 8 out of range 0-7"),
    "cron-step-zero.yaml": E(6, "spec.schedule", "step must be at least 1"),
    "cron-empty.yaml": E(6, "spec.schedule", "schedule is empty"),
    "cron-blank.yaml": E(6, "spec.schedule", "schedule is empty"),
    "cron-null.yaml": E(6, "spec.schedule", "expected a string or a list of strings, got null"),
    "cron-seven-fields.yaml": E(6, "spec.schedule", "got 7"),
    "cron-words.yaml": E(6, "spec.schedule", "expected 5 fields"),
    "cron-unknown-macro.yaml": E(6, "spec.schedule", "unknown macro '@fortnightly'"),
    "cron-every-zero.yaml": E(6, "spec.schedule", "must be greater than zero"),
    "cron-every-negative.yaml": E(6, "spec.schedule", "is negative"),
    "cron-every-bare-number.yaml": E(6, "spec.schedule", "use a number with a unit"),
    "cron-reversed-range.yaml": E(6, "spec.schedule", "range '5-1' is reversed"),
    "cron-negative-field.yaml": E(6, "spec.schedule", "invalid value '-1'"),
    "cron-hash-in-every.yaml": E(6, "spec.schedule", "@every: H only goes in cron fields"),
    "cron-hash-with-range-outside.yaml": E(6, "spec.schedule", "invalid use of H in 'H-5'"),
    "cron-hash-step-too-large.yaml": E(
        6, "spec.schedule", "step 40 in 'H(0-29)/40' is larger than the range 0-29"
    ),
    "schedule-list-bad-item.yaml": E(8, "spec.schedule[1]", "value 25 out of range 0-23"),
    "schedule-list-empty.yaml": E(6, "spec.schedule", "at least 1 item"),
    # ------------------------------------------------------ jitter, active window
    "jitter-longer-than-interval.yaml": E(
        10, "spec.jitter", "jitter 10m is longer than the shortest interval between slots (5m)"
    ),
    # ---------------------------------------------------------- deadline, ping
    "deadline-within-jitter.yaml": E(
        10, "spec.deadline", "deadline 5m is not longer than the jitter (10m)"),
    "ping-url-with-query.yaml": E(10, "spec.ping.url", "should match pattern"),
    "ping-url-not-http.yaml": E(9, "spec.ping.url", "should match pattern"),
    "active-window-reversed.yaml": E(11, "spec.activeUntil", "is before activeFrom 2026-06-01"),
    "active-from-without-offset.yaml": E(10, "spec.activeFrom", "has no UTC offset"),
    # ------------------------------------------------------------------- time zones
    "tz-typo.yaml": E(7, "spec.timeZone", 'unknown time zone "Europe/Berln"'),
    "tz-path-traversal.yaml": E(7, "spec.timeZone", "unknown time zone"),
    "tz-absolute-path.yaml": E(7, "spec.timeZone", 'unknown time zone "/etc/localtime"'),
    "tz-localtime.yaml": E(7, "spec.timeZone", 'unknown time zone "localtime"'),
    "tz-empty.yaml": E(7, "spec.timeZone", 'unknown time zone ""'),
    "tz-posix-prefix.yaml": E(7, "spec.timeZone", "unknown time zone"),
    "tz-utc-offset.yaml": E(7, "spec.timeZone", 'unknown time zone "+02:00"'),
    "tz-integer.yaml": E(7, "spec.timeZone", "expected a string, got an integer"),
    # --------------------------------------------------- durations, ranges, enums
    "duration-negative.yaml": E(10, "spec.timeout", "is negative"),
    "duration-bare-number.yaml": E(10, "spec.timeout", "expected a duration string"),
    "duration-absurd.yaml": E(10, "spec.timeout", "longer than the maximum of 366d"),
    "duration-overflow-digits.yaml": E(10, "spec.timeout", "longer than the maximum of 366d"),
    "duration-zero.yaml": E(10, "spec.startingDeadline", "must be greater than zero"),
    "duration-words.yaml": E(10, "spec.timeout", "invalid duration '5 minutes'"),
    "duration-iso8601.yaml": E(10, "spec.timeout", "invalid duration 'PT5M'"),
    "duration-sub-millisecond.yaml": E(10, "spec.timeout", "shorter than 1ms"),
    "duration-backoff-negative.yaml": E(10, "spec.retries.backoff", "is negative"),
    "range-retries-negative.yaml": E(10, "spec.retries.limit", "greater than or equal to 0"),
    "range-history-absurd.yaml": E(10, "spec.history.successful", "less than or equal to 100000"),
    "range-integer-5000-digits.yaml": E(10, None, "integer is too large (5,000 digits)"),
    "range-max-catch-up-zero.yaml": E(11, "spec.maxCatchUp", "greater than or equal to 1"),
    "enum-concurrency-lowercase.yaml": E(10, "spec.concurrencyPolicy", "'Forbid', 'Allow'"),
    "enum-catch-up-null.yaml": E(10, "spec.catchUp", "'None', 'Latest' or 'All'"),
}
