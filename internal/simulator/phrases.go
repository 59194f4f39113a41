package simulator

// phraseBank holds chat lines by the valence their writer means, from
// despair (level 0) to joy (level 8), in the register of a social world.
// The engine scores them with VADER (or a model server); the bank was
// written for meaning, and TestPhraseBankValenceRises holds VADER's mean
// compound per level to a rising, full-range scale.
var phraseBank = [][]string{
	{ // 0: despair, anger
		"worst day, I failed again and feel worthless",
		"this is terrible, I'm so angry and upset",
		"ugh, that was annoying and I'm tired",
		"I'm exhausted and stressed, everything is going wrong",
		"I can't take this anymore, everything is awful and I hate it",
	},
	{ // 1: distress
		"not great today, a bit sad",
		"meh, I'm bored and a little tired",
		"I'm scared and anxious, my chest is tight",
		"I hate this level",
		"I feel tense and worried about tomorrow",
	},
	{ // 2: low
		"this is bad",
		"not my best round",
		"I feel sad",
		"I feel awful",
		"so annoyed",
	},
	{ // 3: uneasy
		"I feel lonely",
		"hmm, lost that one",
		"I'm a little stressed",
		"a bit bored",
		"slightly worried about the next level",
		"a little nervous",
	},
	{ // 4: neutral
		"anyone up for a round",
		"heading to the market",
		"waiting for the others",
		"where is the next quest",
		"just working on my tasks",
	},
	{ // 5: settled
		"fine",
		"okay",
		"ok that worked",
		"sure, why not",
		"it's fine, carrying on",
	},
	{ // 6: pleasant
		"nice round",
		"a good start",
		"better than yesterday",
		"good to see you all",
		"glad to be here",
		"feeling a bit better",
	},
	{ // 7: happy
		"feeling calm and focused today",
		"I'm happy with that",
		"cool, I like this map",
		"I'm really happy",
		"that was great",
		"that was nice, thanks",
	},
	{ // 8: joy, peace
		"great session, I feel peaceful and happy",
		"this is wonderful, I love playing with you all",
		"amazing day, I feel fantastic and grateful",
		"I feel wonderful, calm and truly happy, thank you",
		"so relaxed and happy right now",
	},
}
