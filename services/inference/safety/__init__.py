"""Safety guard around the model: fixed answers for risky messages, no diagnoses in replies.

`check_input` runs before the model. Crisis (self-harm or suicide, child or parent), abuse or
neglect disclosures, medical emergencies (breathing trouble, choking, seizures, poisoning or
overdose, an unresponsive child, and a few others such as near-drowning) and medication-dosing
questions get a fixed, warm answer carrying the configured country's help lines; the model is
not called. The answers are fixed texts: nothing from the message or the child is put in them.

After the model, `OutputStreamGuard` (or `check_output` on a whole reply) rewrites sentences
that state a diagnosis ("your child has ADHD") into a note that only a professional can tell,
and `finish()` ends replies about development, learning, attention, behaviour, emotions or
milestones with one short "not a diagnosis" sentence (`developmental_note`) unless the reply
already says so. That note is not a rewrite: `category` stays None for it.

Detection is English phrase lists and regular expressions over a normalised text (Unicode
tricks undone first by `textnorm.guard_view`: NFKC, invisible characters dropped, combining
marks dropped, look-alike letters of other scripts folded to ASCII; then lower case,
apostrophes dropped, punctuation as spaces, "k!ll"/"su1cide" read as letters, a few slang
words expanded). Misspelt key words ("sucide", "siezure", "ibuprofin") are corrected to the
nearest word of a small vocabulary (`_FUZZY_VOCAB`) when they are not real English words.
The guard leans towards answering with help lines when in doubt on the dangerous categories,
but avoids common figures of speech ("killing it at math", "dying to try the new game", "a
dose of patience", "he choked on the final question"). The test corpora live in
tests/unit/inference/safety_corpus/; each file also lists messages deliberately left to the
model ("left_to_model"), with the reason.

What counts as medication dosing: how much or how often to give, the maximum, missed, doubled
or repeated doses, splitting adult tablets, two amounts compared, and whether to give a named
medicine at all. Taking a prescribed medicine at some time ("her inhaler before sport"),
getting a child to take medicine, storage, taste and what a medicine does are left to the model.
"""

from services.inference.safety.answers import ANSWER_FIELDS
from services.inference.safety.guard import (
    CATEGORIES,
    SafetyGuard,
    SafetyVerdict,
    guard_from_config,
)
from services.inference.safety.output import (
    OutputStreamGuard,
    developmental_note,
    has_developmental_note,
    needs_developmental_note,
    talks_about_development,
)
from services.inference.safety.resources import RESOURCES_PATH, CountryResources, load_resources

__all__ = [
    "ANSWER_FIELDS",
    "CATEGORIES",
    "RESOURCES_PATH",
    "CountryResources",
    "OutputStreamGuard",
    "SafetyGuard",
    "SafetyVerdict",
    "developmental_note",
    "guard_from_config",
    "has_developmental_note",
    "load_resources",
    "needs_developmental_note",
    "talks_about_development",
]
