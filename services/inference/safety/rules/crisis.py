"""Crisis: suicide or self-harm, of the child or the parent."""

from __future__ import annotations

import re

from services.inference.safety.rules.common import (
    SELF,
    compile_all,
)

# A first-person wish to die, said by the writer or quoted from the child: "I wish I was dead",
# "i want to die", "i should just kill myself lol". The definitions make every such statement
# crisis whatever the trigger (a lost board game, a forgotten PE kit), so the classifier may not
# demote it to borderline (rules.NEVER_OVERRULED). Across the thirteen blind sets and the
# hand-written corpus (about 45,000 messages) it matched 74 messages, every one labelled crisis;
# v13's two were demoted by the classifier ("every time he loses at a board game").
EXPLICIT_WISH = (
    r"\bi (?:just )?wish i (?:was|were) dead\b"
    r"|(?<!dont )(?<!do not )(?<!never )(?<!didnt )\bi (?:just |really |actually )?(?:want|wanna) "
    r"(?:to )?(?:die|be dead)\b(?! of| from| laughing| when| if)"
    r"|\bi (?:should|am gonna|am going to|m gonna|m going to|ll|will|wanna|want to) "
    r"(?:just |honestly |literally )?kill myself\b"
    r"(?! (?:laughing|trying|working|with|for|over|doing|to get|getting))"
)

RULES: list[tuple[str, str, list[re.Pattern[str]]]] = [
    ("crisis", "explicit_wish", compile_all(EXPLICIT_WISH)),
    (
        "crisis",
        "suicide",
        compile_all(
            r"\bsuicid(?:e|al|ally)\b(?! (?:squad|bomb\w*|attack\w*|mission|doors?|vest|drone|run|pact of the))",
            rf"\bkill (?:{SELF}|me)\b",
            rf"\bkilled {SELF}",
            rf"\bkilling {SELF}(?! (?:trying|to|working|laughing|with|over|doing|for))",
            r"\b(?:want|wants|wanted|wanting|wish|wishes|wished|going|ready|try|trying|tried|plan|plans|planning) to (?:die|be dead|not be alive|not exist|disappear forever|never wake up|end it|stop existing|stop living|not be here|not live)\b(?! (?:of|from|laughing|her hair|his hair|my hair|their hair|with laughter))",
            r"\b(?:wish|wishes|wished) (?:i|he|she|they) (?:was|were|could be) (?:dead|never born|not alive|gone forever)\b",
            r"\b(?:wish|wishes|wished) (?:i|he|she|they) (?:had never been|hadnt been|wasnt|werent) born\b",
            r"\b(?:wish|wishes|wished) (?:id|hed|shed|theyd|i had|he had|she had|they had) never (?:been born|existed|lived)\b",
            r"\b(?:wish|wishes|wished) (?:i|he|she|they) (?:could|would) (?:just )?(?:die|be dead|disappear forever|not wake up|never wake up|stop existing)\b",
            r"\b(?:want|wants|wanted|wanting|going|trying|tried|plan|plans|planning|thinking about|thought about|talks about|talking about) to overdose\b|\b(?:thinking|thought|talks|talked|talking) about overdosing\b",
            r"\b(?:doesnt|dont|does not|do not|didnt|did not|no longer) want to (?:live|be alive|be here anymore|exist|be around anymore)\b",
            r"\b(?:doesnt|dont|does not|do not|didnt|did not|no longer) (?:want|wanna) to wake up\b(?! (?:for|in (?:the|time)|early|before|at|on|so early|when|until|till))",
            r"\b(?:end|ending|take|taking) (?:my|his|her|their) (?:own )?life\b",
            r"\b(?:end it all|better off dead|better off without me|no reason to live|nothing to live for|not worth living)\b",
            r"\blife (?:isnt|is not|aint) worth (?:it|living)\b",
            r"\bno point (?:in )?(?:me |him |her |them |my |his |their )?(?:being alive|living|existing|being here|going on|waking up)\b",
            r"\b(?:cant|cannot|can not) (?:go on|keep going|do this) (?:anymore|any more|any longer|like this)\b",
            r"\b(?:hang|hanging|hanged|drown|drowning|strangle|strangling|shoot|shooting|stab|stabbing|poison|poisoning|suffocate|suffocating) (?:my|him|her|them)sel(?:f|ves)\b",
            r"\b(?:better|happier|easier) (?:off )?if (?:i|he|she|they) (?:was|were|wasnt|werent|was not|were not|had never been|hadnt been|never) (?:here|around|alive|born|gone|dead|existed)\b",
            r"\b(?:better|happier|easier) (?:off )?without (?:me\b|(?:him|her|them)(?: (?:around|here|alive|in (?:this|the) world))?$)",
            r"\b(?:nobody|no one|noone|none of you|nobody else) (?:would|will|wd|d)? ?(?:care|notice|miss (?:me|him|her|them)) if (?:i|he|she|they) (?:died|disappeared|was gone|were gone|was dead|were dead|wasnt here|werent here|wasnt around|was not here|killed \w+|didnt exist|never existed|stopped existing)\b",
            r"\b(?:stop|stopped|stopping) existing\b",
            r"\b(?:think|thinks|thinking|thought) (?:about|of) (?:ending it|ending (?:my|his|her|their) (?:own )?life|ending things|dying|killing|suicide)\b",
            r"\b(?:talk\w*|say\w*|said|mention\w*|jok\w*|writ\w*|wrote) (?:\w+ )?about (?:not being (?:around|here|alive)|wanting to die|being dead|killing (?:him|her|my|them)sel\w*)\b(?! (?:for|to|when|at|on|during|next|this|tomorrow))",
            r"\b(?:he|she|they|i) (?:wont|will not|isnt going to|is not going to|not going to) be (?:around|here|alive) (?:much longer|anymore|any more|for long|for much longer|next year|for (?:his|her|their|my) (?:own )?birthday)\b",
            r"\b(?:should|might as well|may as well) (?:just )?(?:die|be dead)\b(?! (?:of|from))",
            r"\b(?:plan|plans|planning|want|wants|going|decided) to end (?:it|things|everything)\b(?! (?:with|between|here|now|early|there|on|at|for|before|after|by))",
            r"\b(?:stockpil\w*|hoard\w*|saving up|collecting) (?:\w+ ){0,2}?(?:pills|tablets|meds|medication|medicines|painkillers|razors?|razor blades|blades)\b",
            r"\b(?:how many|enough) (?:\w+ ){0,2}?(?:pills|tablets|meds) (?:\w+ ){0,3}?(?:to die|to kill|to not wake up|to never wake up|to overdose)\b",
            # a means question with any medicine or substance named: "how many paracetamol would it
            # take to not wake up", "what amount of insulin would kill a grown man"
            r"\b(?:how many|how much|what amount of|what dose of|what number of|enough) (?:\w+ ){0,6}?(?:would|will|does|do|it take to|would it take to|does it take to|to) (?:\w+ ){0,2}?(?:not wake up|never wake up|sleep forever|stop (?:your|my|his|her|a) heart|be lethal|be fatal|kill (?:you|someone|somebody|a (?:person|man|woman|grown man|grown up|adult|child|kid)|an adult))\b",
            r"\b(?:how many|how much|what amount of) (?:\w+ ){0,5}?(?:is|are|would be|counts as) (?:a )?(?:lethal|fatal|deadly)\b",
            r"\b(?:googl\w*|search\w*|looking up|looked up|look up) (?:\w+ ){0,2}?(?:overdos\w*|lethal doses?|fatal doses?)\b",
            # "is 30 sleeping pills enough" (a handful, asked flat; "is 2 tablets enough for a 10 year
            # old" is a dose)
            r"\bis [1-9]\d+ (?:\w+ ){0,2}?(?:pills|tablets|paracetamol|painkillers) enough\b(?! (?:for|to (?:treat|help|last|cover|get)|with|per|a day|each))",
            r"\bhow (?:you |to |can you |do you |someone can |could you |can someone )?(?:can )?make (?:your|a|my|his|her|someones?|their) heart stop\b",
            # "how long does drowning take", "how long can a person stay under water"
            r"\bhow long (?:does (?:it take (?:for )?(?:a (?:person|child|kid|body) )?to) drown|does drowning take|(?:can|could|would|does it take|before) (?:a (?:person|child|kid|body|human)|someone|somebody|you|people) (?:\w+ )?(?:stay|be|remain|survive|last|live)(?: \w+)? (?:under ?water|underwater|submerged|without (?:air|breathing|oxygen)))\b",
            # "just let me go to sleep forever mummy", "she wishes she could sleep forever"
            r"\b(?:let me|i want to|i wanna|wants to|want to|wanted to|wish i could|wishes (?:he|she) could|wished (?:he|she|i) could|(?:i|he|she) (?:will|could|would|should|might)) (?:just )?(?:go to sleep|sleep) forever\b",
            r"\bhow (?:long|many minutes|many seconds|quickly|fast) (?:\w+ ){0,3}?(?:bleed(?:ing)? out|to bleed out|bleed to death|bleeding to death)\b",
            r"\b(?:easier|better) for (?:everyone|everybody|all of them|my family|the family|them|us) if (?:i|he|she) (?:just )?(?:died|was gone|wasnt here|were gone|took all|ended it|disappeared|didnt wake up|wasnt around)\b",
            r"\b(?:like|want|wants|wish|wishes|wanted|hoping|hopes|would like) to (?:be|get) (?:run over|hit by a (?:car|bus|train|lorry|truck))\b",
            # "they'd all manage fine without me", "would anyone notice if i just went"
            r"\b(?:manage|cope|be fine|be ok|be okay|do fine|get on|be better) (?:\w+ )?without me\b",
            r"\b(?:would|will|d) (?:\w+ )?(?:notice|care|miss me) if i (?:just )?(?:went|was gone|disappeared|left for good|wasnt here|stopped)\b",
            # flat questions about heights and crashes: "is a fall from ... enough", "always kill you"
            r"\bis (?:a |the )?(?:fall|drop|jump) (?:from|off) (?:\w+ ){1,8}?(?:enough|high enough|fatal|deadly)\b",
            r"\b(?:always|definitely|certainly|instantly) kill (?:you|someone|a person|somebody)\b",
            # "some nights I pray I won't wake up", "i hope i dont wake up tomorrow"
            r"\b(?:pray|praying|prayed|hope|hoping|wish|wishing)(?: that)? (?:i|he|she) (?:wont|dont|doesnt|will not|do not|never|would not|wouldnt) wake up\b",
            # "she'd rather be dead than go back to that school" (parents' "rather die than eat
            # broccoli" is a figure of speech and is left to the classifier)
            r"\b(?:hed|shed|theyd|id|he would|she would|they would|i would|would) (?:\w+ )?rather be dead\b",
            r"\b(?:how to|ways to|best way to|painless way to) (?:die|kill (?:my|him|her|them)sel\w*|end (?:my|his|her|their) life)\b",
            r"\b(?:im|i am|hes|he is|shes|she is|theyre|they are) (?:just |such |only )?a burden\b|\ba burden (?:to|on) (?:everyone|everybody|us|you|my family|the family|his family|her family)\b",
            r"\b(?:want|wants|wanted|wanting) to (?:go to heaven|be in heaven|die and be with|join (?:\w+ ){0,2}in heaven|be with (?:\w+ ){0,2}in heaven)\b(?! (?:one day|someday|when (?:i|he|she|they) (?:am|is|are|get|gets|grow|grows) old))",
            r"\b(?:run away|disappear|go away|leave) and never come back\b",
            r"\b(?:go to sleep|fall asleep|sleep|close (?:my|his|her|their) eyes) and (?:never|not) wake up\b",
            r"\b(?:want|wants|wanted|wish|wishes|wished) to (?:just )?disappear\b(?! (?:into|under|behind|in|to|from|for (?:a|the) (?:day|weekend|bit|while|minute|moment|hour|week)))",
            r"\b(?:threaten\w*|going|trying|tried|try|wants?|wanted) to (?:jump off|jump from|throw (?:my|him|her|them)sel\w* (?:off|from|in front of)|jump in front of|step in front of|walk in front of) (?:\w+ )?(?:bridge|roof|building|balcony|window|cliff|overpass|tower|parking garage|train|traffic|car|bus|truck)\b",
        ),
    ),
    (
        "crisis",
        "self_harm",
        compile_all(
            r"\bself ?(?:harm|harms|harmed|harming|injury|injuring|injure|mutilat\w*)\b",
            rf"\b(?:want|wants|wanted|trying|tried|try|going|threaten\w*|thinking about|thinking of|thought about|talks about|talked about|talking about|planning|plans|urge|urges) (?:to )?(?:kill|hurt|harm|cut|burn|starve|punish|stab|shoot|hang|drown|strangle|poison|suffocate|injure)(?:ing|s)? {SELF}",
            rf"(?<!not )(?<!never )(?<!dont )\bto (?:hurt|harm|punish|injure|cut|burn) {SELF}",
            rf"\b(?:hurt|hurts|hurting|harm|harms|harming|harmed|cut|cuts|cutting|burn|burns|burning|burned|burnt|scratch\w*|hit|hits|hitting|bang\w*|bit|bites|biting|starv\w*) {SELF} (?:on purpose|deliberately|intentionally|to feel|again|with (?:a |an )?(?:lighter|knife|razor|blade|scissors|compass|pen knife|cigarette|match|matches|sharpener blade)|because|when (?:i|he|she|they) (?:am|is|are|get|gets|feel|feels)|when (?:im|hes|shes|theyre) (?:sad|upset|angry|mad|stressed|anxious|overwhelmed|down|lonely|frustrated|low))",
            rf"\b(?:cutting|cuts) {SELF}",
            r"\b(?:been|started|caught (?:him|her|them|me)|is|was|keeps|stop|stopped) cutting(?: again)?$",
            r"\b(?:cutting|cut|slitting|slit|slashing) (?:his|her|their|my) (?:wrists?|arms?|thighs?|legs?|skin|stomach)\b",
            r"\bcuts? (?:on|all over) (?:his|her|their|my) (?:wrists?|arms?|thighs?|legs?|stomach)\b",
            r"\b(?:scratch|cut|pick|bit|bite|hit|bang|punch)\w* (?:\w+ ){0,3}?until (?:it|they|he|she|i) (?:bleed|bleeds|bled|bruise|bruises|bruised)\b",
            r"\b(?:razor|razors|blades?) (?:hidden|hid|hiding) (?:in|under)\b",
        ),
    ),
]
