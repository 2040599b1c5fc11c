"""Pattern fragments the input rules share (children, adults, medicines, amounts...).

The rules match the normalised text of safety.text.norm: lower case, letters,
digits and single spaces.
"""

from __future__ import annotations

import re


def compile_all(*patterns: str) -> list[re.Pattern[str]]:
    return [re.compile(p) for p in patterns]


KID = (
    r"(?:sons?|daughters?|child|children|kids?|bab(?:y|ies)|infants?|newborns?|toddlers?|boys?|"
    r"girls?|little ones?|teens?|teenagers?|twins?|niece|nephew|grandson|granddaughter|"
    r"grandchild(?:ren)?|stepson|stepdaughter|students?|pupils?|"
    r"\d+ (?:year|yr|month)s? olds?)"
)
VICTIM = rf"(?:him|her|them|me|us|(?:my|our|the|his|her|their) (?:\w+ )?{KID})"
ADULT = (
    r"(?:(?:my|his|her|their|our|the|mommys|mummys|mums|moms|daddys|dads) )?(?:dad|daddy|father|"
    r"stepdad|stepfather|step dad|step father|mom|mommy|mum|mummy|mother|stepmom|stepmum|"
    r"stepmother|step mom|step mum|boyfriend|girlfriend|partner|husband|wife|ex|ex husband|"
    r"ex wife|uncle|aunt|auntie|grandpa|grandfather|grandma|grandmother|granddad|grandad|"
    r"teacher|coach|babysitter|nanny|neighbou?r|priest|pastor|caregiver|carer|tutor|"
    r"brother in law|sister in law|mother in law|father in law|cousin|foster \w+|"
    r"(?:grown|older|adult) (?:man|woman|guy)|stepbrother|stepsister|childminder|"
    r"(?:daycare|nursery|day care|creche) (?:worker|teacher|staff|lady|man)|bus driver|"
    r"(?:scout|youth|camp|church|swim|football|soccer|dance|music) (?:leader|counsel(?:l)?or|coach|teacher|instructor)|"
    r"counsel(?:l)?or|instructor|landlord|lodger)"
)
NOT_ACC = r"(?:(?!accident|by accident)\w+ ){0,2}?"
SELF = r"(?:my|him|her|them|your) ?sel(?:f|ves)\b(?! (?:esteem|confidence|worth|image|care|control|doubt|talk))"
MEDNAME = (
    r"(?:tylenol|acetaminophen|paracetamol|calpol|panadol|ibuprofen|advil|motrin|nurofen|"
    r"aspirin|benadryl|diphenhydramine|zyrtec|cetirizine|claritin|loratadine|allegra|"
    r"melatonin|antihistamines?|antibiotics?|amoxicillin|augmentin|azithromycin|"
    r"cough (?:syrup|medicine)|cold medicine|fever (?:medicine|reducer)|pain ?killers?|"
    r"ritalin|methylphenidate|adderall|concerta|vyvanse|guanfacine|clonidine|sertraline|"
    r"zoloft|fluoxetine|prozac|risperidone|prednisone|prednisolone|steroids?|miralax|"
    r"laxatives?|dramamine|imodium|loperamide|albuterol|salbutamol|ventolin|insulin|"
    r"iron supplements?|gripe water|teething gel|orajel|simethicone|gas drops|pedialyte|"
    r"dioralyte|electrolyte solution|oral rehydration \w+|nyquil|dayquil|sudafed|robitussin|"
    r"piriton|chlorphenamine|chlorpheniramine|benylin|tixylix|calprofen|medised|hydroxyzine|"
    r"montelukast|singulair|omeprazole|gaviscon|antidepressants?|sleeping (?:pills|tablets)|"
    r"xanax|valium|diazepam|lorazepam|oxycodone|opioids?|percocet|vicodin|tramadol|codeine|"
    r"lithium|blood thinners?|warfarin|birth control pills|the pill|clonazepam|vitamin d|"
    r"iron (?:pills|tablets|drops)|fluoride (?:tablets|drops))"
)
MED = (
    # "tablet" is also the screen: "on the tablet", "tablet time" are not medicine
    rf"(?:{MEDNAME}|medicines?|medications?|meds|syrup|drops|"
    r"(?<!on the )(?<!on his )(?<!on her )(?<!on a )(?<!on my )tablet(?! time| games?| screen)|"
    r"tablets|pills?|capsules?|"
    r"suppositor(?:y|ies)|gummies|doses?|vitamins?|inhaler|puffer)"
)
UNIT = (
    r"(?:mg|ml|mls|milligrams?|millilit(?:er|re)s?|teaspoons?|tsp|tablespoons?|"
    r"tablet(?! time| games?| screen)|tablets|pills?|"
    r"drops|puffs?|units|capsules?|mcg|micrograms?)"
)
HARMFUL = (
    r"(?:bleach|detergent|laundry (?:pod|pods|capsule|capsules|liquid)|dishwasher (?:tablet|tablets|pod|pods|liquid)|"
    r"cleaning (?:product|products|fluid|liquid|spray)|chemicals?|poison|rat poison|pesticides?|"
    r"weed killer|antifreeze|paint thinner|lamp oil|kerosene|gasoline|petrol|lighter fluid|"
    r"drain cleaner|oven cleaner|(?:button )?batter(?:y|ies)(?! (?:powered|operated|charger|life))|magnets?|nicotine|"
    r"vape (?:liquid|juice|pod|pods)|e liquid|alcohol|vodka|whiskey|whisky|rum|gin|wine|"
    r"mouthwash|essential oils?|hand sanitiz(?:er|ers)|hand saniti[sz]er|wild mushrooms?|"
    r"cannabis|edibles?|nail polish(?: remover)?|acetone|coins?|marbles?|superglue|glue|"
    r"perfume|cologne|aftershave|(?:windshield |windscreen )?washer fluid|screenwash|brake fluid|motor oil|turpentine|"
    r"fertili[sz]er|bug spray|insecticide|toilet cleaner|descaler|caustic soda|lye|ammonia)"
)
LOTS = (
    r"(?:some|several|a handful of|a bunch of|a lot of|lots of|all (?:of )?(?:the|my|his|her)|"
    r"the whole (?:bottle|pack|packet|box) of|too many|too much|an? (?:entire |whole )?"
    r"(?:bottle|pack|packet|box|sheet|strip|handful|bunch) of|my|mommys|mummys|daddys|grandmas|"
    r"grandpas|nanas|someones|\d+)"
)
GAP = r"(?:(?!before|after|with|and|then|but|because|so)\w+ )"
COND = (
    r"(?:adhd|add|asd|ocd|odd|ptsd|attention deficit(?: hyperactivity)?(?: disorder)?|"
    r"autism(?: spectrum disorder)?|asperger(?: ?s)?(?: syndrome)?|dyslexia|dyscalculia|dyspraxia|"
    r"dysgraphia|(?:clinical |major )?depression|bipolar(?: disorder)?|tourette(?: ?s)?(?: syndrome)?|"
    r"oppositional defiant disorder|obsessive compulsive disorder|selective mutism|"
    r"schizophrenia|anorexia|bulimia|apraxia|sensory processing disorder|"
    r"an? (?:anxiety|mood|eating|learning|language|speech|conduct|attachment|personality|"
    r"developmental|attention|processing|behaviou?r(?:al)?) (?:disorder|disability|delay)|"
    r"(?:an? )?(?:generali[sz]ed |social )?anxiety disorder|an? intellectual disability|"
    r"an? developmental delay|an? learning disability|"
    # named conditions a reply may pin on a child
    r"arfid|pda|fasd|misophonia|dyspraxic|hypermobility|reflux|asthma|sleep apno?ea|"
    r"global developmental delay)"
)
# COND or any "<one or two words> disorder/syndrome": only after a fixed lead-in (a subject, "it
# is"), never at the start of a pattern, where any word could begin it and a streamed reply
# would be held word after word.
COND_AFTER = rf"(?:{COND}|(?:\w+ ){{0,2}}(?:disorder|syndrome))"
PAST = r"(?:last|ago|before|in the past|when (?:he|she|they) was|yesterday|a while)"
