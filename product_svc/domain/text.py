"""Free text: the checks every catalog text field passes, and the normalized
forms that names sort by and searches match against."""

from __future__ import annotations

import string
import unicodedata

from common.errors import FieldViolation
from common.validation import control_problem, invalid

NAME_KEY_MAX = 48  # characters of a name that order it (see sort_name)
QUERY_MAX = 200  # characters of a search query
QUERY_TERMS_MAX = 10


def text_problem(value: str, *, max_len: int, required: bool, allow_newlines: bool = False) -> str | None:
    if required and not value:
        return "is required"
    if len(value) > max_len:
        return f"must be at most {max_len} characters"
    return control_problem(value, multiline=allow_newlines)


def normalize(value: str) -> str:
    """Case- and width-insensitive form used for sorting and search."""
    return unicodedata.normalize("NFKC", value).casefold()


def sort_name(value: str) -> str:
    """The key names sort by: normalized, and short enough to travel in a page
    token (names alike in their first characters are ordered by id)."""
    return normalize(value)[:NAME_KEY_MAX]


def search_text(name: str, description: str) -> str:
    """The normalized text a search query is matched against."""
    return " ".join(normalize(f"{name} {description}").split())


def search_terms(query: str) -> tuple[str, ...]:
    """Words of a search query, normalized and de-duplicated (every one must match)."""
    if len(query) > QUERY_MAX:
        raise invalid(FieldViolation("query", f"must be at most {QUERY_MAX} characters"))
    if control := control_problem(query):
        raise invalid(FieldViolation("query", control))
    terms = tuple(dict.fromkeys(normalize(query).split()))
    if len(terms) > QUERY_TERMS_MAX:
        raise invalid(FieldViolation("query", f"at most {QUERY_TERMS_MAX} words"))
    return terms


def regex_literal(term: str) -> str:
    """``term`` as a regular expression matching it literally, in a syntax both
    PCRE (MongoDB) and RE2 (FerretDB) read the same way: ASCII punctuation is
    backslash-escaped, everything else stays as it is."""
    return "".join(f"\\{ch}" if ch in string.punctuation else ch for ch in term)
