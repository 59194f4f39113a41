// English messages. zh-CN.ts must have the same keys (the type says so).

export interface ScopeText {
  title: string;
  what: string;
  why: string;
  basis: string;
}

export interface InterventionText {
  name: string;
  steps: string[];
}

const duration = (seconds: number): string => {
  const days = seconds / 86400;
  if (days >= 1 && Number.isInteger(days)) return days === 1 ? "1 day" : `${days} days`;
  const hours = seconds / 3600;
  if (hours >= 1 && Number.isInteger(hours)) return hours === 1 ? "1 hour" : `${hours} hours`;
  const minutes = Math.round(seconds / 60);
  return minutes === 1 ? "1 minute" : `${minutes} minutes`;
};

export const en = {
  lang: "en",
  appName: "Attune",
  tagline: "Short guided exercises for attention, calm and resilience",
  language: "Language",
  skip: "Skip to content",
  list: (items: string[]) => items.join(", "),
  sentences: (items: string[]) => items.join(" "),
  nav: { label: "Main", session: "Session", feedback: "How I am", consent: "Consent", data: "My data" },
  loading: "Loading…",
  retry: "Try again",
  errors: {
    launch: "This page needs the link your world gives you: it carries your access. Open Attune from your world again.",
    network: "The engine could not be reached. Check your connection and try again.",
    engine: (status: number, message: string) => `The engine refused the request (${status}): ${message}`,
    unknownUser: "The engine does not know you yet. Give consent first.",
  },
  consent: {
    title: "Your consent",
    intro:
      "Attune estimates your attention, emotion and resilience from data your world sends, and suggests short exercises. Nothing is collected without your consent, scope by scope. You can change your mind at any time.",
    policyVersion: (v: string) => `Privacy notice, version ${v}`,
    world: (context: string) => `World type: ${context}`,
    what: "What is collected",
    why: "Why",
    kept: "How long it is kept",
    basis: "Legal basis",
    kinds: (list: string) => ` (Data kinds: ${list})`,
    noKinds: "no extra data",
    granted: "Granted",
    notGranted: "Not granted",
    allow: (title: string) => `Allow: ${title}`,
    prohibited:
      "This world never accepts these signals: inferring emotions from biometric data is prohibited in workplaces and education (EU AI Act, Art. 5(1)(f)).",
    retention: (seconds: number) =>
      `Kept while you use the program, and deleted ${duration(seconds)} after you were last active. You can erase it yourself at any time under “My data”.`,
    researchRetention: (seconds: number) => `Each decision is deleted ${duration(seconds)} after it was taken, or when you erase your data.`,
    recorded: (at: string) => `The engine recorded your choices at ${at}.`,
    none: "You have not granted anything yet: the engine stores nothing about you.",
    nowGranted: (title: string) => `Granted: ${title}.`,
    nowWithdrawn: (title: string) => `Withdrawn: ${title}. New data of this kind is no longer accepted; erase what is stored under “My data”.`,
    withdrawAll: "Withdraw everything",
    allWithdrawn: "Every scope is withdrawn.",
    next: "Continue to a session",
    unknown: "The engine does not know you: nothing is stored about you.",
    outdated: (given: string, now: string, required: boolean) =>
      `You gave your consent under version ${given || "(none)"} of the privacy notice; it is now version ${now}. Please review your choices and confirm them.` +
      (required ? " Until you do, the engine accepts no new data from you." : ""),
    confirm: (v: string) => `Confirm my choices under version ${v}`,
    confirmed: (v: string) => `Your choices are confirmed under version ${v}.`,
  },
  scopes: {
    behaviour: {
      title: "Behaviour in the world",
      what: "What you do in the world: focus and task switches, your answers to short attention tasks, and the sessions you take here with your ratings.",
      why: "To estimate your attention and resilience, and to learn which exercises help you.",
      basis: "Your explicit consent (GDPR Art. 9(2)(a)): these signals are used to estimate your wellbeing, which is health data. Withdrawing stops new data; it does not erase what was stored.",
    },
    physiology: {
      title: "Heart signals",
      what: "Heartbeat intervals and heart rate from a wearable, if your world sends them.",
      why: "To estimate how calm or stressed you are, and how quickly you recover.",
      basis: "Your explicit consent (GDPR Art. 9(2)(a)): biometric health data.",
    },
    text: {
      title: "What you write or say",
      what: "Your chat messages and speech in the world, scored for emotional tone. The engine keeps the score, not the words.",
      why: "To estimate your emotional state.",
      basis: "Your explicit consent (GDPR Art. 9(2)(a)): used to estimate your wellbeing.",
    },
    questionnaire: {
      title: "Questionnaires about you",
      what: "Your answers to short questionnaires: how you feel (mood) and how you bounce back (the Brief Resilience Scale).",
      why: "To estimate your emotion and your resilience from what you tell us yourself.",
      basis: "Your explicit consent (GDPR Art. 9(2)(a)): health questionnaires.",
    },
    research: {
      title: "Research",
      what: "No extra data: your log of suggestions (which exercise was offered, whether you did it, and how your state changed afterwards) may be exported under a pseudonym, never with your name or ID.",
      why: "So the program can check whether its exercises really help, and stop those that do not.",
      basis: "Your explicit consent (GDPR Art. 9(2)(a)), for research with safeguards (Art. 89(1)): pseudonymised.",
    },
  } as Record<string, ScopeText>,
  unknownScope: (scope: string): ScopeText => ({
    title: scope,
    what: "Data of the kinds listed.",
    why: "See your world's privacy notice.",
    basis: "Your explicit consent (GDPR Art. 9(2)(a)).",
  }),
  kinds: {
    behaviour: "focus and activity events",
    sart: "attention-task answers",
    questionnaire: "questionnaire answers",
    intervention: "sessions and ratings",
    rr: "heartbeat intervals",
    heart_rate: "heart rate",
    text: "tone of your texts",
  } as Record<string, string>,
  session: {
    title: "Session",
    intro: "At a natural break, ask whether a short exercise is suggested now.",
    ask: "Is a session suggested now?",
    asking: "Asking the engine…",
    offered: "Suggested for you now",
    duration: (seconds: number) => {
      const m = Math.floor(seconds / 60);
      const s = Math.round(seconds % 60);
      return m > 0 ? (s > 0 ? `${m} min ${s} s` : `${m} min`) : `${s} s`;
    },
    length: "Length",
    strength: "Dose strength",
    shortened: (seconds: number) => `Shortened to ${seconds} s for this test or demo.`,
    begin: "Begin",
    notNow: "Not now",
    declined: "Fine. The engine noted that you skipped it.",
    none: "No session now",
    reasons: {
      unavailable: "You said you are not available now.",
      cooldown: "You had a session recently. The next one can be suggested later.",
      daily_cap: "You have had today’s sessions. Rest is part of it, too.",
      randomised:
        "Not this time: carry on. The program sometimes suggests nothing, on purpose, to learn what really helps.",
    } as Record<string, string>,
    askAgain: "Ask again",
    remaining: "Time left",
    progress: "Session progress",
    pause: "Pause",
    resume: "Resume",
    stop: "Stop",
    paused: "Paused",
    breatheIn: "Breathe in",
    breatheOut: "Breathe out",
    pace: "About six breaths a minute: five seconds in, five seconds out.",
    breath: (n: number, of: number) => `Breath ${n} of ${of}`,
    pacer: "Breathing pacer",
    step: (n: number, of: number) => `Step ${n} of ${of}`,
    steps: "Steps",
    done: "Well done. The session is over.",
    stopped: "You stopped the session.",
    rate: "How helpful was it? (1 to 5)",
    ratings: ["Not at all", "A little", "Somewhat", "Quite", "Very"],
    skipRating: "Skip",
    thanks: "Thank you. Your answer was recorded with this suggestion.",
    sendFailed: "Your answer could not be recorded.",
    needsBehaviour: "Recording sessions needs the “Behaviour in the world” scope.",
    another: "Back",
  },
  interventions: {
    FocusedAttention: {
      name: "Focused attention",
      steps: [
        "Sit comfortably; let your eyes close or rest on one point.",
        "Choose one anchor: the breath at your nostrils.",
        "When your mind wanders, notice where it went, then gently come back.",
        "Keep coming back, without judging yourself.",
        "Widen your attention to the room, then open your eyes.",
      ],
    },
    ResonanceBreathing: {
      name: "Resonance breathing",
      steps: [
        "Sit upright and let your shoulders drop.",
        "Follow the circle: breathe in as it grows, out as it shrinks.",
        "Breathe gently through the nose, without forcing.",
      ],
    },
    BodyScan: {
      name: "Body scan",
      steps: [
        "Notice your feet and toes.",
        "Move up through your legs and hips.",
        "Notice your belly and back.",
        "Notice your chest, arms and hands.",
        "Notice your shoulders and neck.",
        "Notice your face and head, then the whole body.",
      ],
    },
    CognitiveReappraisal: {
      name: "Reappraisal",
      steps: [
        "Name the situation that upset you.",
        "Notice the feeling and where you feel it.",
        "Describe the situation as a kind friend would.",
        "Look wider: what else might be true?",
        "Choose one small next step.",
      ],
    },
    MicroBreak: {
      name: "Micro-break",
      steps: [
        "Stand up and step away from the screen.",
        "Look into the distance for a while.",
        "Stretch your neck, shoulders and back.",
        "Take three slow breaths before you return.",
      ],
    },
    ResilienceTraining: {
      name: "Resilience training",
      steps: [
        "Recall a recent setback.",
        "What helped you recover, even a little?",
        "Which of your strengths did you use?",
        "Plan one step for next time.",
        "Note one thing you are grateful for today.",
      ],
    },
  } as Record<string, InterventionText>,
  feedback: {
    title: "How I am",
    intro: "The engine’s current estimate, with how sure it is. It is an estimate from your data, not a diagnosis.",
    refresh: "Refresh",
    updated: (at: string) => `Estimated at ${at}.`,
    dims: { attention: "Attention", emotion: "Emotion (calm)", resilience: "Resilience" } as Record<string, string>,
    levels: ["low", "moderate", "high"],
    value: (pct: number, level: string) => `${pct}% (${level})`,
    confidence: (pct: number, level: string) => `Confidence ${pct}% (${level})`,
    confidenceLevels: ["low", "medium", "high"],
    basedOn: (list: string) => `Based on: ${list}`,
    unknown: "Not estimated yet: there is no recent data about this.",
    physiologyOff:
      "In this world emotion is never inferred from heart signals (EU AI Act, Art. 5(1)(f)); only from what you write or report.",
    unknownNoPhysiology:
      "Not estimated: heart signals are off in this world, and there is no recent text or self-report.",
    sources: {
      sart: "attention task",
      behaviour: "activity in the world",
      text: "tone of your texts",
      "self-report": "your mood reports",
      "rr-intervals": "heartbeat intervals",
      "heart-rate": "heart rate",
      brs: "resilience questionnaire",
      "stress-recovery": "recovery from stress",
    } as Record<string, string>,
    samples: (n: number) => (n === 1 ? "1 sample" : `${n} samples`),
    chart: "The last 7 days",
    chartDesc: (n: number) =>
      `${n === 1 ? "1 reading" : `${n} readings`} kept on this device. Solid line: attention; dashed: emotion; dotted: resilience.`,
    noHistory: "No readings on this device yet. Each visit adds one.",
    table: "Show the numbers",
    time: "Time",
    lastSession: "Last suggestion",
    lastNone: (at: string) => `${at}: nothing suggested.`,
    lastDelivered: (at: string, name: string) => `${at}: ${name}.`,
    completed: "Completed.",
    notCompleted: "Not completed.",
    rated: (n: number) => `Rated ${n} of 5.`,
    outcome: (change: number) =>
      Math.abs(change) < 0.0005
        ? "Afterwards your distance from the program’s goal did not change measurably."
        : change < 0
          ? `Afterwards your distance from the program’s goal went down by ${Math.abs(change).toFixed(3)}.`
          : `Afterwards your distance from the program’s goal went up by ${change.toFixed(3)}.`,
    outcomePending: (at: string) => `The change it made is measured at ${at}.`,
  },
  data: {
    title: "My data",
    intro: "Download what the engine holds about you, or erase all of it.",
    export: "Download my data (JSON)",
    exported: "Your data was downloaded.",
    erase: "Erase all my data",
    eraseTitle: "Erase everything?",
    eraseBody:
      "The engine deletes your state, consent and decisions at once, for good. This device forgets its history too. You can start again later with new consent.",
    confirmErase: "Yes, erase",
    cancel: "Cancel",
    erased: "Erased. The engine no longer knows you.",
  },
  fmtTime: (iso: string) => new Date(iso).toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short" }),
};

export type Messages = typeof en;
