#!/usr/bin/env bats
# Every example in a man page is also a test (DESIGN.md §5, as in jq), every
# page renders without a warning, and a program's SYNOPSIS agrees with --help.
#
# The rules for examples, which the pages follow:
#   - An example is a .EX/.EE block. A line in it that starts with "$ " is a
#     command; the text after "$ " runs with `bash -o pipefail`, stdin from
#     /dev/null, in a scratch directory made for the page that holds
#     model.safetensors (llmux-testgen safetensors) and docs.stream
#     (llmux-testgen stream docs.stream 4 5), with bin/ first on PATH and then
#     the conformance tier's virtual environment (${LLMUX_VENV:-~/.cache/llmux/venv},
#     with safetensors, numpy and msgpack) where it exists. The commands of
#     one page run in order in that one directory. Each must exit 0.
#   - The lines right after a command, up to the next command or the end of the
#     block, are its output: where there are any, the command's stdout must
#     equal them exactly. Lines before a block's first command are not checked.
#   - A command that opens a here-document (<<'EOF') takes the lines up to the
#     terminator as its input, not as output.
#   - A comment line `.\" requires: COMMAND` just before a command runs it only
#     where COMMAND succeeds (a Python module, say); what was left out is
#     reported as a TAP comment, and the rest of the page still runs.
#   - Roff escapes are undone as a reader sees them: \- -> -, \e -> \,
#     \(dq -> ", \(aq -> ', \& and font changes vanish, \" starts a comment;
#     any other escape in an example is an error, so nothing goes untested.
#     Lines that start with . or ' are requests: the reader does not see them.
#
# One @test per page and aspect: the examples of a page fail together, with a
# message that names each failing command by page and line. Pages not listed
# below are checked by the last @test, so a new page is never left out.

ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
GEN="$ROOT/build/t/llmux-testgen"
LISTED=(man1/llm-inspect.1 man5/llm-tensors.5 man5/llm-stream.5)
VENV=${LLMUX_VENV:-$HOME/.cache/llmux/venv}
EXAMPLE_PATH=$ROOT/bin:$PATH
if [ -x "$VENV/bin/python3" ]; then EXAMPLE_PATH=$ROOT/bin:$VENV/bin:$PATH; fi

# Splits a page's examples into files under $2: NNN.cmd (the script),
# NNN.out (the output shown, when any), NNN.where (page:line), NNN.req.
read -r -d '' EXTRACT <<'PERL' || true
use strict;
use warnings;
binmode STDOUT, ':utf8';
my ($page, $dir) = @ARGV;
my %char = (dq => '"', aq => "'", ga => '`', rs => '\\', ti => '~', ha => '^',
            lq => "\x{201c}", rq => "\x{201d}", em => "\x{2014}", en => "\x{2013}",
            hy => '-', "'e" => "\x{e9}", mu => "\x{d7}");
open my $fh, '<:utf8', $page or die "$page: $!\n";
sub unescape {
    my ($s, $where) = @_;
    my $r = '';
    pos($s) = 0;
    while (pos($s) < length $s) {
        if ($s =~ /\G([^\\]+)/gc)                { $r .= $1; next }
        if ($s =~ /\G\\"/gc)                     { last }
        if ($s =~ /\G\\[e\\]/gc)                 { $r .= '\\'; next }
        if ($s =~ /\G\\-/gc)                     { $r .= '-'; next }
        if ($s =~ /\G\\ /gc)                     { $r .= ' '; next }
        if ($s =~ /\G\\\./gc)                    { $r .= '.'; next }
        if ($s =~ /\G\\[&|^:%]/gc)               { next }
        if ($s =~ /\G\\f(?:\(..|\[[^\]]*\]|.)/gc) { next }
        if ($s =~ /\G\\(?:\((..)|\[([^\]]+)\])/gc) {
            my $name = defined $1 ? $1 : $2;
            die "$where: example uses \\($name, which this test does not know\n" unless exists $char{$name};
            $r .= $char{$name};
            next;
        }
        $s =~ /\G(\\.?)/gc;
        die "$where: example uses the roff escape $1, which this test does not know\n";
    }
    return $r;
}
my ($in, $n, $cur, $req, $term, $ex_line) = (0, 0);
sub finish {
    return unless $cur;
    my $base = sprintf "%s/%03d", $dir, $cur->{n};
    for (['cmd', $cur->{cmd}], ['where', $cur->{where}], ['req', $cur->{req}],
         ['out', @{$cur->{out}} ? join('', map { "$_\n" } @{$cur->{out}}) : undef]) {
        next unless defined $_->[1];
        open my $o, '>:utf8', "$base.$_->[0]" or die "$base.$_->[0]: $!\n";
        print $o $_->[1];
        close $o or die "$base.$_->[0]: $!\n";
    }
    $cur = undef;
}
while (my $line = <$fh>) {
    chomp $line;
    my $where = "$page:$.";
    if (!$in) {
        if ($line =~ /^\.EX\b/) { $in = 1; $ex_line = $where }
        next;
    }
    if ($line =~ /^\.EE\b/) {
        die "$where: here-document '$term' not ended before .EE\n" if defined $term;
        finish();
        $in = 0;
        next;
    }
    if ($line =~ /^[.']/) {
        $req = $1 if $line =~ /^\.\\"\s*requires:\s*(.*\S)/;
        next;
    }
    my $text = unescape($line, $where);
    if (defined $term) {
        $cur->{cmd} .= "$text\n";
        $term = undef if $text eq $term;
        next;
    }
    if ($text =~ /^\$ (.*)$/) {
        finish();
        $cur = { n => ++$n, cmd => "$1\n", where => $where, req => $req, out => [] };
        $req = undef;
        $term = $2 if $1 =~ /<<-?\s*(['"]?)(\w+)\1/;
        next;
    }
    push @{$cur->{out}}, $text if $cur;
}
die "$ex_line: .EX without .EE\n" if $in;
PERL

setup() {
    if [ ! -x "$ROOT/bin/llm-inspect" ] || [ ! -x "$GEN" ]; then
        echo "build first: make && make build/t/llmux-testgen" >&2
        return 1
    fi
}

# check_examples PAGE: runs the page's examples; fails naming each that fails.
check_examples() {
    local page=$ROOT/man/$1
    local ex="$BATS_TEST_TMPDIR/examples" work="$BATS_TEST_TMPDIR/work"
    [ -f "$page" ] || { echo "$page: no such page" >&2; return 1; }
    rm -rf "$ex" "$work"
    mkdir -p "$ex" "$work"
    (cd "$ROOT/man" && perl -e "$EXTRACT" "$1" "$ex") || return 1
    (cd "$work" && "$GEN" safetensors model.safetensors && "$GEN" stream docs.stream 4 5) || return 1
    local failed=0 ran=0 base where st
    local -a left_out=()
    for base in "$ex"/*.cmd; do
        [ -e "$base" ] || continue
        base=${base%.cmd}
        where=$(<"$base.where")
        if [ -e "$base.req" ] &&
           ! (cd "$work" && PATH=$EXAMPLE_PATH bash -c "$(<"$base.req")") </dev/null >/dev/null 2>&1; then
            left_out+=("$where (needs: $(<"$base.req"))")
            continue
        fi
        ran=$((ran + 1))
        st=0
        (cd "$work" && PATH=$EXAMPLE_PATH LC_ALL=C.UTF-8 timeout 60 bash -o pipefail "$base.cmd") \
            </dev/null >"$base.stdout" 2>"$base.stderr" || st=$?
        if [ "$st" -ne 0 ]; then
            failed=$((failed + 1))
            printf '%s: exit status %d from:\n%s' "$where" "$st" "$(sed '1s/^/    $ /;2,$s/^/      /' "$base.cmd")"
            printf '\n  stderr:\n%s\n' "$(sed 's/^/    /' "$base.stderr")"
        elif [ -e "$base.out" ] && ! cmp -s "$base.out" "$base.stdout"; then
            failed=$((failed + 1))
            printf '%s: output differs from the page (--- page, +++ actual) for:\n%s\n' \
                "$where" "$(sed '1s/^/    $ /;2,$s/^/      /' "$base.cmd")"
            diff -u "$base.out" "$base.stdout" | tail -n +3
        fi
    done
    for where in "${left_out[@]}"; do echo "# $where: not run" >&3; done
    if [ "$ran" -eq 0 ] && [ "${#left_out[@]}" -eq 0 ]; then
        echo "# $1: no examples" >&3
    fi
    [ "$failed" -eq 0 ]
}

# check_renders PAGE: groff and man format it without a single warning.
check_renders() {
    local page=$ROOT/man/$1 out
    [ -f "$page" ] || { echo "$page: no such page" >&2; return 1; }
    out=$(groff -k -man -ww -z -Tutf8 "$page" 2>&1) || { echo "$out"; return 1; }
    [ -z "$out" ] || { echo "groff warns on $1:"; echo "$out"; return 1; }
    if command -v man >/dev/null; then
        out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings=w -l "$page" 2>&1 >/dev/null) || { echo "$out"; return 1; }
        [ -z "$out" ] || { echo "man warns on $1:"; echo "$out"; return 1; }
    fi
}

# check_synopsis PAGE: for a section 1 page of a program in bin/, the SYNOPSIS
# as rendered says what the Usage lines of --help say (spacing aside).
check_synopsis() {
    local page=$ROOT/man/$1 name
    name=$(basename "$1" .1)
    case $1 in man1/*) ;; *) return 0 ;; esac
    [ -x "$ROOT/bin/$name" ] || return 0
    local want got
    want=$("$ROOT/bin/$name" --help | sed -n '/^Usage:/,/^$/p' | sed '1d;/^$/d' | tr -s ' \n' '  ' | sed 's/^ //;s/ $//')
    got=$(groff -k -man -Tascii -P-c -P-b -P-u -P-o "$page" 2>/dev/null |
          sed -n '/^SYNOPSIS/,/^[A-Z]/p' | sed '1d;$d' | tr -s ' \n' '  ' | sed 's/^ //;s/ $//')
    if [ "$want" != "$got" ]; then
        printf '%s: SYNOPSIS does not agree with %s --help\n  --help: %s\n  page:   %s\n' "$1" "$name" "$want" "$got"
        return 1
    fi
}

@test "llm-inspect(1): every example runs and prints what the page shows" {
    check_examples man1/llm-inspect.1
}

@test "llm-inspect(1): renders without warnings" {
    check_renders man1/llm-inspect.1
}

@test "llm-inspect(1): SYNOPSIS agrees with llm-inspect --help" {
    check_synopsis man1/llm-inspect.1
}

@test "llm-tensors(5): every example runs and prints what the page shows" {
    check_examples man5/llm-tensors.5
}

@test "llm-tensors(5): renders without warnings" {
    check_renders man5/llm-tensors.5
}

@test "llm-stream(5): every example runs and prints what the page shows" {
    check_examples man5/llm-stream.5
}

@test "llm-stream(5): renders without warnings" {
    check_renders man5/llm-stream.5
}

@test "every other man page: examples, rendering, SYNOPSIS" {
    local page rel listed failed=0
    for page in "$ROOT"/man/man*/*.[1-9]; do
        [ -e "$page" ] || continue
        rel=${page#"$ROOT"/man/}
        for listed in "${LISTED[@]}"; do [ "$rel" = "$listed" ] && continue 2; done
        check_examples "$rel" || failed=1
        check_renders "$rel" || failed=1
        check_synopsis "$rel" || failed=1
    done
    [ "$failed" -eq 0 ]
}
