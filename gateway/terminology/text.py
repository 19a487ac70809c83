"""Free-text normalisation for condition names, so that spelling variants meet in one key.

>>> normalise_text("Glioblastoma  Multiforme!")
'glioblastoma multiforme'
>>> normalise_text("Non-Small-Cell Lung Cancer (NSCLC)")
'non small cell lung cancer nsclc'
>>> loose_key("Brain Tumours")
'brain tumor'
"""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[^0-9a-z]+")

# British -> American spellings, applied word by word in loose_key (terms are stored in both forms
# by the data anyway; this catches the words nobody listed).
_SPELLING = {
    "tumour": "tumor", "tumours": "tumors", "oesophageal": "esophageal", "oesophagus": "esophagus",
    "oesophagogastric": "esophagogastric", "haematological": "hematological", "haematologic": "hematologic",
    "haemangioblastoma": "hemangioblastoma", "haemangioma": "hemangioma", "leukaemia": "leukemia",
    "leukaemias": "leukemias", "oestrogen": "estrogen", "paediatric": "pediatric", "anaemia": "anemia",
    "haematopoietic": "hematopoietic", "ischaemic": "ischemic",
}
# Words whose plural is not just a trailing s.
_SINGULAR = {"metastases": "metastasis", "neoplasia": "neoplasm", "carcinomata": "carcinoma",
             "lymphomata": "lymphoma", "sarcomata": "sarcoma", "leukemias": "leukemia"}
# Words that carry no meaning for matching a condition name.
_STOP = frozenset({"the", "of", "and", "or", "with", "a", "an", "nos", "disorder", "disease", "finding"})


# Course and setting words that do not change which disease is meant ('Recurrent Glioblastoma' is a
# glioblastoma). 'metastatic', 'secondary' and 'primary' are NOT here: they change the concept.
_MODIFIERS = frozenset({"recurrent", "relapsed", "refractory", "progressive", "progressing", "newly",
                        "diagnosed", "adult", "adults", "childhood", "pediatric", "advanced", "unresectable",
                        "locally", "resectable", "inoperable", "untreated", "previously", "treated",
                        "residual", "persistent", "first", "recurrence", "relapse"})


def normalise_text(text: str) -> str:
    """Lower case, accents and punctuation removed, apostrophes dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = text.replace("'", "").replace("\u2019", "")  # "Hodgkin's" -> "hodgkins", not "hodgkin s"
    return _NON_WORD.sub(" ", text).strip()


def _singular(word: str) -> str:
    if word in _SINGULAR:
        return _SINGULAR[word]
    # 'tumors' -> 'tumor', but keep 'metastasis', 'glioblastomatosis', 'mass', 'nucleus' whole.
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "is", "us")):
        return word[:-1]
    return word


def loose_key(text: str) -> str:
    """A coarser key: normalised, American spelling, singular, minus filler words ('of', 'nos').

    'Tumours of the Brain' -> 'tumor brain'; used when the exact normalised text has no entry.
    """
    words = []
    for word in normalise_text(text).split():
        word = _singular(_SPELLING.get(word, word))
        if word not in _STOP:
            words.append(word)
    return " ".join(words)


def strip_modifiers(loose: str) -> str:
    """'recurrent glioblastoma' -> 'glioblastoma' (works on a loose_key)."""
    return " ".join(w for w in loose.split() if w not in _MODIFIERS)


_US_TO_UK = {us: uk for uk, us in _SPELLING.items()}


def spelling_variants(word: str) -> tuple[str, ...]:
    """A normalised word and its other English spelling, for full-text search of words a patient types.

    'tumour' -> ('tumour', 'tumor'); 'leukemia' -> ('leukemia', 'leukaemia'); 'brain' -> ('brain',)
    """
    other = _SPELLING.get(word) or _US_TO_UK.get(word)
    return (word, other) if other and other != word else (word,)
