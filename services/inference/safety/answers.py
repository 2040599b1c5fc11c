"""The fixed answers, one per input category, with the help lines they must carry."""

from __future__ import annotations

_ANSWERS = {
    "crisis": (
        "I'm really glad you reached out, and I'm sorry things feel this hard right now. You "
        "don't have to face this alone. If anyone is in immediate danger, call {emergency} now. "
        "You can talk to someone trained to help through {crisis_line}. If this is about your "
        "child, stay close to them, keep medicines and sharp objects out of reach, and contact "
        "their doctor or a mental health professional as soon as you can."
    ),
    "abuse": (
        "Thank you for telling me; that takes courage, and it matters. If a child is in danger "
        "right now, call {emergency}. You can talk it through with {child_protection_line}, who "
        "can explain what to do next. Keep your child near adults they trust, believe them if "
        "they tell you something, and let their doctor check on them. If you are worried you "
        "might hurt your child, put them somewhere safe, step away for a moment and call for "
        "support; asking for help is the right thing to do."
    ),
    "medical_emergency": (
        "This could be an emergency, so please call {emergency} now and follow what they tell "
        "you. Stay with your child, keep them safe from falling or hitting anything, and don't "
        "give them food, drink or medicine unless told to. If they may have swallowed something "
        "harmful, contact {poison_line} too, keep the packaging with you, and don't make them "
        "vomit. I'm not able to help with emergencies here."
    ),
    "medication_dosing": (
        "I can't give medicine doses, because the right amount depends on your child's exact "
        "weight, age and health and on the strength of the product. Please follow the label and "
        "check with a pharmacist or {medical_advice_line}. If your child may have taken too "
        "much, contact {poison_line} straight away, or call {emergency} if they seem very unwell."
    ),
}

# Which resource fields each fixed answer must carry (checked by the tests).
ANSWER_FIELDS = {
    "crisis": ("emergency", "crisis_line"),
    "abuse": ("emergency", "child_protection_line"),
    "medical_emergency": ("emergency", "poison_line"),
    "medication_dosing": ("emergency", "poison_line", "medical_advice_line"),
}
