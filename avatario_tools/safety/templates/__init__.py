"""Sentence templates per category (see grammar.py for the syntax).

Every module has GROUPS: subtopic -> templates. All of it is written here for this corpus,
from the category definitions in issue 11; nothing is taken from chat logs or from children.
"""

from __future__ import annotations

from avatario_tools.safety.templates import abuse, benign, chat, crisis, dosing, emergency

CATEGORIES = ("crisis", "abuse", "medical_emergency", "medication_dosing")
MODULES = {
    "crisis": crisis,
    "abuse": abuse,
    "medical_emergency": emergency,
    "medication_dosing": dosing,
    "benign": benign,
}
# Template sources per label, in corpus order: benign has the look-alikes and ordinary chat.
SOURCES = (
    ("benign", benign),
    ("benign", chat),
    ("crisis", crisis),
    ("abuse", abuse),
    ("medical_emergency", emergency),
    ("medication_dosing", dosing),
)

# Slots every category may use.
COMMON_SLOTS: dict[str, list[str]] = {
    "adult": [
        "his dad", "her dad", "my husband", "my ex", "my ex-husband", "her stepdad",
        "his stepfather", "my boyfriend", "my partner", "her uncle", "his uncle", "the coach",
        "his coach", "her football coach", "the babysitter", "our neighbour", "the neighbor",
        "my brother in law", "her grandpa", "his grandfather", "a teacher at school",
        "the tutor", "her piano teacher", "his cousin", "an older boy", "a family friend",
        "the nanny", "my mother in law", "her mum's boyfriend", "his mom's new boyfriend",
        "my girlfriend", "the youth leader", "a man from church", "my dad", "my stepmom",
        "the swim instructor", "the lodger", "my ex-wife", "her aunt",
    ],
    "time": [
        "yesterday", "last night", "this morning", "tonight", "today", "an hour ago",
        "earlier", "just now", "on Sunday", "this week", "a few minutes ago", "after school",
    ],
    "worry": [
        "I'm really scared", "I'm terrified", "I'm worried sick", "I don't know what to think",
        "I'm panicking", "I'm shaking", "I feel sick about it", "I can't stop thinking about it",
        "I'm so worried", "",
    ],
    "part": ["arms", "wrists", "thighs", "legs", "stomach", "forearms", "upper arms", "hips"],
    "food": [
        "peanuts", "a peanut butter sandwich", "cashews", "shrimp", "prawns", "egg",
        "a cookie with nuts", "sesame", "kiwi", "fish", "a cereal bar", "pistachios",
        "a satay sauce", "milk", "walnuts", "a new snack",
    ],
    "medname": [
        "Tylenol", "Calpol", "paracetamol", "acetaminophen", "ibuprofen", "Motrin", "Nurofen",
        "Advil", "Benadryl", "Zyrtec", "cetirizine", "Claritin", "melatonin", "amoxicillin",
        "the antibiotic", "cough syrup", "Piriton", "antihistamine", "the fever medicine",
        "children's Tylenol", "infant Motrin", "Calprofen", "the allergy medicine",
    ],
    "psychmed": [
        "sertraline", "Zoloft", "fluoxetine", "Prozac", "Ritalin", "methylphenidate",
        "Concerta", "Adderall", "Vyvanse", "guanfacine", "Intuniv", "clonidine",
        "risperidone", "aripiprazole", "Abilify", "escitalopram", "Lexapro", "atomoxetine",
        "Strattera", "his ADHD medication", "her antidepressant", "his anxiety medicine",
        "her SSRI", "his stimulant", "lisdexamfetamine", "Elvanse", "Equasym", "melatonin",
        "her mood stabiliser", "the ADHD meds", "the antidepressant",
    ],
}
