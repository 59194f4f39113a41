// The language: the user's choice on this device, else the browser's
// (any Chinese preference gives Simplified Chinese), else English.

import { en, type Messages } from "./messages/en.js";
import { zhCN } from "./messages/zh-CN.js";

export const languages = { en: "English", "zh-CN": "简体中文" } as const;
export type Lang = keyof typeof languages;

const catalogs: Record<Lang, Messages> = { en, "zh-CN": zhCN };
const storageKey = "attune.lang";

let lang: Lang = detect();

function detect(): Lang {
  const saved = localStorage.getItem(storageKey);
  if (saved === "en" || saved === "zh-CN") return saved;
  for (const l of navigator.languages ?? [navigator.language]) {
    const tag = l.toLowerCase();
    if (tag.startsWith("zh")) return "zh-CN";
    if (tag.startsWith("en")) return "en";
  }
  return "en";
}

export function currentLang(): Lang {
  return lang;
}

export function setLang(next: Lang): void {
  lang = next;
  localStorage.setItem(storageKey, next);
  document.documentElement.lang = next;
}

/** The messages of the current language. */
export function t(): Messages {
  return catalogs[lang];
}
