"""The emulator's scans of a preprocessed source (~1 MB of headers before the user's lines) give what the plain
scans gave, faster: `_words` is re.finditer with a leading \\b, `_file_spans` / `_user_code_with_offsets` follow
the line markers as a line-by-line walk does, `_close_paren` and `_enclosing_function` jump between brackets.
Each is checked here against the plain version, written out, on the cases where a shortcut could go wrong."""
import re

import pytest

from minilora import emulator as emu


@pytest.mark.parametrize("pattern", [r"__global__\b", r"namespace\b([\w\s:]*)\{", r'extern\s*"\s*"\s*\{'])
@pytest.mark.parametrize("text", [
    "__global__ void k(); x__global__ y __global__z __global__",
    "xnamespace namespace b { namespace c::d {} }",  # a match that fails its \b must not hide one inside it
    "é__global__ _namespace a {} namespace\tq\n{",  # a non-ASCII letter is a word character too
    'extern " " { } xextern " "{ extern" "{'])
def test_words_are_finditer_with_a_leading_word_boundary(pattern, text):
    expected = [(m.start(), m.end(), m.groups()) for m in re.finditer(r"\b" + pattern, text)]
    assert [(m.start(), m.end(), m.groups()) for m in emu._words(pattern, text)] == expected


def _lines_walked(preprocessed, masked):
    """The line-by-line walk over the markers that _user_code_with_offsets replaces."""
    offset, current, line = 0, "", 0
    for raw, text in zip(preprocessed.split("\n"), masked.split("\n")):
        start, offset = offset, offset + len(text) + 1
        marker = re.match(r'# (\d+) "([^"]*)"', raw)
        if marker:
            line, current = int(marker.group(1)), marker.group(2)
            continue
        if emu._is_user_file(current):
            yield current, line, text, start
        line += 1


HEADER = str(emu.EMU_DIR / "cuda_emu.h")
PREPROCESSED = [
    f'# 1 "k.cu"\n# 1 "{HEADER}" 1\nint a;\n\n# 3 "k.cu" 2\n__global__ void k() {{ "s" }}\n\n# 9 "k.cu"\nx\n',
    f'# 1 "k.cu"\n# 1 "/usr/include/x.h" 1\n# 2 "k.cu" 2\n# 5 "k.cu"\n\n\ny // c\n# 7 "/usr/include/y.h"',
    'no markers at all\nsecond line',
    f'# 4 "k.cu"\nlast line without a newline\n# 1 "{HEADER}" 1\n']


def _spans_walked(preprocessed):
    """(file, first line, start, end) of each run of lines between markers, by the same walk."""
    spans, offset, current, line, start, count = [], 0, "", 0, 0, 0
    for raw in preprocessed.split("\n"):
        if re.match(r'# (\d+) "([^"]*)"', raw):
            if count:
                spans.append((current, line, start, offset - 1))
            marker = re.match(r'# (\d+) "([^"]*)"', raw)
            line, current, count, start = int(marker.group(1)), marker.group(2), 0, offset + len(raw) + 1
        else:
            count += 1
        offset += len(raw) + 1
    if count and start <= len(preprocessed):
        spans.append((current, line, start, len(preprocessed)))
    return spans


@pytest.mark.parametrize("preprocessed", PREPROCESSED)
def test_user_lines_are_the_walks_lines(preprocessed):
    masked = emu._mask(preprocessed)
    assert list(emu._file_spans(preprocessed)) == _spans_walked(preprocessed)
    assert list(emu._user_code_with_offsets(preprocessed, masked)) == list(_lines_walked(preprocessed, masked))


def test_names_taken_by_headers_read_the_headers_lines_only():
    preprocessed = (f'# 1 "{HEADER}" 1\nextern double exp (double x);\n# 1 "k.cu" 2\n'
                    'extern int copy(int);\n__global__ void exp(float* y) {}\n__global__ void copy(float* y) {}\n')
    assert [span[0] for span in emu._file_spans(preprocessed)] == [HEADER, "k.cu"]
    assert emu._names_taken_by_headers(preprocessed, emu._mask(preprocessed), {"exp", "copy"}) == {"exp"}


def _closed_by_walking(text, i):
    """The character-by-character walk that _close_paren replaces."""
    opener, depth = text[i], 0
    closer = {"(": ")", "[": "]", "{": "}", "<": ">"}[opener]
    for j in range(i, len(text)):
        depth += (text[j] == opener) - (text[j] == closer)
        if text[j] == closer and depth == 0:
            return j
    return None


def test_close_paren_counts_its_own_kind_of_bracket_only():
    text = "f(a, (b[0]), {c)}) + g(<[x]>{ {()} })"
    for i, ch in enumerate(text):
        if ch in "([{<":
            assert emu._close_paren(text, i) == _closed_by_walking(text, i), (i, ch)
    with pytest.raises(emu.CompileError, match="unbalanced '<'"):
        emu._close_paren("a < b", 2)
    # the brace offsets _enclosing_function walks are those of the source it is given, found once per source
    one, two = emu._mask("a { b } { c"), emu._mask("{{ x }}")
    assert emu._brace_positions(one) == [2, 6, 8] and emu._brace_positions(one) is emu._brace_positions(one)
    assert emu._brace_positions(two) == [0, 1, 5, 6] and emu._brace_positions(one) == [2, 6, 8]


def test_enclosing_function_steps_over_blocks_and_lambdas_after_a_long_header():
    header = "namespace std { struct s { int f() { return 1; } }; }\n" * 2000
    source = header + "__global__ void k(int* y) { if (1) { auto l = [&]() { return 2; }; } HERE; }\nint g() { HERE; }"
    masked = emu._mask(source)
    assert len(emu._brace_positions(masked)) == masked.count("{") + masked.count("}")
    assert emu._enclosing_function(masked, masked.index("HERE")) == ("k", True)
    assert emu._enclosing_function(masked, masked.rindex("HERE")) == ("g", False)
    assert emu._enclosing_function(masked, masked.index("__global__")) == ("", False)  # file scope
    assert emu._enclosing_function(masked, masked.index("return 1")) == ("f", False)


DECLARED_BY_ONE_REGEX = r"(?:\b(?:extern|inline)\b[^;{}()=]*?[\s*&]|\busing\s+(?:std\s*)?::\s*)"


@pytest.mark.parametrize("library", [
    "extern double exp (double __x) throw ();", "extern long timezone;", "using std::abs;", "using ::copy ;",
    "static inline __device__ int min(int a, int b) { return a; }", "int k(float exp); float y = exp(2.0);",
    "extern int x; exp(1);", "extern\nfloat *\ncopy(", "externx copy(", "x inline_copy(", "a &copy;",
    "extern int (*exp)(int);", "usingstd::abs;", "using  std ::\nabs\t(", "inline auto f() -> int; abs;"])
def test_declared_names_are_the_one_regexs(library):
    for name in ("exp", "timezone", "abs", "copy", "min", "k", "f"):
        expected = re.search(DECLARED_BY_ONE_REGEX + re.escape(name) + r"\s*[(;]", library) is not None
        assert emu._declares(library, name) == expected, (library, name)
