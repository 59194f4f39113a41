// 简体中文消息。键与 en.ts 相同（类型检查保证）。

import type { InterventionText, Messages, ScopeText } from "./en.js";

const duration = (seconds: number): string => {
  const days = seconds / 86400;
  if (days >= 1 && Number.isInteger(days)) return `${days} 天`;
  const hours = seconds / 3600;
  if (hours >= 1 && Number.isInteger(hours)) return `${hours} 小时`;
  return `${Math.round(seconds / 60)} 分钟`;
};

export const zhCN: Messages = {
  lang: "zh-CN",
  appName: "Attune",
  tagline: "提升专注、平静与心理韧性的简短引导练习",
  language: "语言",
  skip: "跳到正文",
  list: (items: string[]) => items.join("、"),
  sentences: (items: string[]) => items.join(""),
  nav: { label: "主菜单", session: "练习", feedback: "我的状态", consent: "同意", data: "我的数据" },
  loading: "加载中…",
  retry: "重试",
  errors: {
    launch: "此页面需要通过你所在世界提供的链接打开：链接中带有你的访问凭证。请从你的世界重新打开 Attune。",
    network: "无法连接到引擎。请检查网络后重试。",
    engine: (status: number, message: string) => `引擎拒绝了请求（${status}）：${message}`,
    unknownUser: "引擎还不认识你。请先给予同意。",
  },
  consent: {
    title: "你的同意",
    intro:
      "Attune 根据你所在世界发送的数据估计你的专注、情绪和心理韧性，并推荐简短的练习。未经你的同意，不会收集任何数据；每一类数据单独同意。你可以随时改变主意。",
    policyVersion: (v: string) => `隐私声明，版本 ${v}`,
    world: (context: string) => `世界类型：${context}`,
    what: "收集什么",
    why: "为什么收集",
    kept: "保存多久",
    basis: "法律依据",
    kinds: (list: string) => `（数据类型：${list}）`,
    noKinds: "不收集额外数据",
    granted: "已同意",
    notGranted: "未同意",
    allow: (title: string) => `允许：${title}`,
    prohibited: "此世界从不接收这类信号：在工作场所和教育场景中，禁止根据生物特征数据推断情绪（欧盟《人工智能法》第 5 条第 1 款 (f) 项）。",
    retention: (seconds: number) =>
      `在你使用本项目期间保存；你最后一次活动 ${duration(seconds)}后删除。你也可以随时在“我的数据”中自行删除。`,
    researchRetention: (seconds: number) => `每条决策记录在产生 ${duration(seconds)}后删除，或在你删除数据时删除。`,
    recorded: (at: string) => `引擎已于 ${at} 记录你的选择。`,
    none: "你尚未同意任何内容：引擎没有存储任何关于你的数据。",
    nowGranted: (title: string) => `已同意：${title}。`,
    nowWithdrawn: (title: string) => `已撤回：${title}。此类新数据将不再被接收；已存储的数据可在“我的数据”中删除。`,
    withdrawAll: "全部撤回",
    allWithdrawn: "所有同意均已撤回。",
    next: "继续进行练习",
    unknown: "引擎不认识你：没有存储任何关于你的数据。",
    outdated: (given: string, now: string, required: boolean) =>
      `你是在隐私声明版本 ${given || "（无）"} 下给予同意的；现在的版本是 ${now}。请查看并确认你的选择。` +
      (required ? "在你确认之前，引擎不会接收你的新数据。" : ""),
    confirm: (v: string) => `在版本 ${v} 下确认我的选择`,
    confirmed: (v: string) => `你的选择已在版本 ${v} 下确认。`,
  },
  scopes: {
    behaviour: {
      title: "在世界中的行为",
      what: "你在世界中的活动：专注与任务切换、简短注意力任务的作答，以及你在这里进行的练习和评分。",
      why: "用于估计你的专注和心理韧性，并了解哪些练习对你有帮助。",
      basis: "你的明确同意（GDPR 第 9 条第 2 款 (a) 项）：这些信号用于估计你的身心状况，属于健康数据。撤回同意会停止接收新数据，但不会删除已存储的数据。",
    },
    physiology: {
      title: "心脏信号",
      what: "来自可穿戴设备的心跳间期和心率（如果你的世界会发送）。",
      why: "用于估计你的平静或紧张程度，以及你恢复的速度。",
      basis: "你的明确同意（GDPR 第 9 条第 2 款 (a) 项）：生物特征健康数据。",
    },
    text: {
      title: "你写下或说出的内容",
      what: "你在世界中的聊天消息和语音，用于评估情绪基调。引擎只保存评分，不保存原文。",
      why: "用于估计你的情绪状态。",
      basis: "你的明确同意（GDPR 第 9 条第 2 款 (a) 项）：用于估计你的身心状况。",
    },
    questionnaire: {
      title: "关于你的问卷",
      what: "你对简短问卷的回答：你的感受（情绪）以及你从困难中恢复的能力（简易心理韧性量表）。",
      why: "根据你亲自告诉我们的内容，估计你的情绪和心理韧性。",
      basis: "你的明确同意（GDPR 第 9 条第 2 款 (a) 项）：健康问卷。",
    },
    research: {
      title: "研究",
      what: "不收集额外数据：你的推荐记录（推荐了哪个练习、你是否完成、之后状态如何变化）可以以假名形式导出，绝不包含你的姓名或 ID。",
      why: "以便项目检验这些练习是否真的有帮助，并停止无效的练习。",
      basis: "你的明确同意（GDPR 第 9 条第 2 款 (a) 项），用于有保障措施的研究（第 89 条第 1 款）：已假名化。",
    },
  } as Record<string, ScopeText>,
  unknownScope: (scope: string): ScopeText => ({
    title: scope,
    what: "所列类型的数据。",
    why: "请参阅你所在世界的隐私声明。",
    basis: "你的明确同意（GDPR 第 9 条第 2 款 (a) 项）。",
  }),
  kinds: {
    behaviour: "专注与活动事件",
    sart: "注意力任务作答",
    questionnaire: "问卷作答",
    intervention: "练习与评分",
    rr: "心跳间期",
    heart_rate: "心率",
    text: "文字的情绪基调",
  } as Record<string, string>,
  session: {
    title: "练习",
    intro: "在自然的休息间隙，询问现在是否推荐一次简短练习。",
    ask: "现在推荐练习吗？",
    asking: "正在询问引擎…",
    offered: "现在为你推荐",
    duration: (seconds: number) => {
      const m = Math.floor(seconds / 60);
      const s = Math.round(seconds % 60);
      return m > 0 ? (s > 0 ? `${m} 分 ${s} 秒` : `${m} 分钟`) : `${s} 秒`;
    },
    length: "时长",
    strength: "剂量强度",
    shortened: (seconds: number) => `为测试或演示缩短为 ${seconds} 秒。`,
    begin: "开始",
    notNow: "现在不做",
    declined: "好的。引擎已记录你跳过了这次练习。",
    none: "现在没有练习",
    reasons: {
      unavailable: "你表示现在不方便。",
      cooldown: "你刚做过一次练习。稍后才会推荐下一次。",
      daily_cap: "今天的练习已经完成。休息也是练习的一部分。",
      randomised: "这次没有推荐：请继续你的活动。为了了解什么真正有帮助，项目有时会有意不推荐。",
    } as Record<string, string>,
    askAgain: "再问一次",
    remaining: "剩余时间",
    progress: "练习进度",
    pause: "暂停",
    resume: "继续",
    stop: "停止",
    paused: "已暂停",
    breatheIn: "吸气",
    breatheOut: "呼气",
    pace: "大约每分钟六次呼吸：吸气五秒，呼气五秒。",
    breath: (n: number, of: number) => `第 ${n} 次呼吸，共 ${of} 次`,
    pacer: "呼吸节拍器",
    step: (n: number, of: number) => `第 ${n} 步，共 ${of} 步`,
    steps: "步骤",
    done: "做得好。练习结束了。",
    stopped: "你停止了练习。",
    rate: "这次练习有帮助吗？（1 到 5 分）",
    ratings: ["完全没有", "有一点", "一般", "比较有", "非常有"],
    skipRating: "跳过",
    thanks: "谢谢。你的回答已与这次推荐一起记录。",
    sendFailed: "你的回答未能记录。",
    needsBehaviour: "记录练习需要“在世界中的行为”这一项同意。",
    another: "返回",
  },
  interventions: {
    FocusedAttention: {
      name: "专注注意",
      steps: [
        "舒适地坐好；闭上眼睛，或让目光停在一点上。",
        "选择一个锚点：鼻孔处的呼吸。",
        "当思绪飘走时，留意它去了哪里，然后温和地回来。",
        "一次次回来，不评判自己。",
        "把注意力扩展到整个房间，然后睁开眼睛。",
      ],
    },
    ResonanceBreathing: {
      name: "共振呼吸",
      steps: ["坐直，放松肩膀。", "跟随圆圈：圆圈变大时吸气，变小时呼气。", "用鼻子轻柔地呼吸，不要用力。"],
    },
    BodyScan: {
      name: "身体扫描",
      steps: [
        "留意你的双脚和脚趾。",
        "向上移动到双腿和臀部。",
        "留意腹部和背部。",
        "留意胸口、手臂和双手。",
        "留意肩膀和脖子。",
        "留意面部和头部，然后感受整个身体。",
      ],
    },
    CognitiveReappraisal: {
      name: "认知重评",
      steps: [
        "说出让你不安的情境。",
        "留意这种感受，以及它在身体的哪个部位。",
        "像一位善意的朋友那样描述这个情境。",
        "放宽视角：还有哪些可能也是真的？",
        "选择一个小小的下一步。",
      ],
    },
    MicroBreak: {
      name: "微休息",
      steps: ["站起来，离开屏幕。", "向远处眺望一会儿。", "伸展脖子、肩膀和背部。", "回来之前，慢慢呼吸三次。"],
    },
    ResilienceTraining: {
      name: "心理韧性训练",
      steps: [
        "回想最近的一次挫折。",
        "是什么帮助你恢复，哪怕只是一点点？",
        "你运用了自己的哪些长处？",
        "为下一次计划一个步骤。",
        "写下今天让你感恩的一件事。",
      ],
    },
  } as Record<string, InterventionText>,
  feedback: {
    title: "我的状态",
    intro: "引擎当前的估计，以及它有多确定。这是根据你的数据得出的估计，不是诊断。",
    refresh: "刷新",
    updated: (at: string) => `估计时间：${at}。`,
    dims: { attention: "专注", emotion: "情绪（平静）", resilience: "心理韧性" } as Record<string, string>,
    levels: ["低", "中", "高"],
    value: (pct: number, level: string) => `${pct}%（${level}）`,
    confidence: (pct: number, level: string) => `置信度 ${pct}%（${level}）`,
    confidenceLevels: ["低", "中", "高"],
    basedOn: (list: string) => `依据：${list}`,
    unknown: "尚未估计：最近没有这方面的数据。",
    physiologyOff: "在此世界中，情绪从不根据心脏信号推断（欧盟《人工智能法》第 5 条第 1 款 (f) 项）；只根据你写下或报告的内容。",
    unknownNoPhysiology: "未估计：此世界关闭了心脏信号，且最近没有文字或自我报告。",
    sources: {
      sart: "注意力任务",
      behaviour: "在世界中的活动",
      text: "文字的情绪基调",
      "self-report": "你的情绪报告",
      "rr-intervals": "心跳间期",
      "heart-rate": "心率",
      brs: "心理韧性问卷",
      "stress-recovery": "压力后的恢复",
    } as Record<string, string>,
    samples: (n: number) => `${n} 个样本`,
    chart: "最近 7 天",
    chartDesc: (n: number) => `本设备保存了 ${n} 次读数。实线：专注；虚线：情绪；点线：心理韧性。`,
    noHistory: "本设备还没有读数。每次查看都会增加一次。",
    table: "显示数值",
    time: "时间",
    lastSession: "上一次推荐",
    lastNone: (at: string) => `${at}：没有推荐。`,
    lastDelivered: (at: string, name: string) => `${at}：${name}。`,
    completed: "已完成。",
    notCompleted: "未完成。",
    rated: (n: number) => `评分 ${n} 分（满分 5 分）。`,
    outcome: (change: number) =>
      Math.abs(change) < 0.0005
        ? "之后你与项目目标的距离没有可测量的变化。"
        : change < 0
          ? `之后你与项目目标的距离缩小了 ${Math.abs(change).toFixed(3)}。`
          : `之后你与项目目标的距离增加了 ${change.toFixed(3)}。`,
    outcomePending: (at: string) => `它带来的变化将在 ${at} 测量。`,
  },
  data: {
    title: "我的数据",
    intro: "下载引擎保存的关于你的数据，或全部删除。",
    export: "下载我的数据（JSON）",
    exported: "你的数据已下载。",
    erase: "删除我的全部数据",
    eraseTitle: "全部删除？",
    eraseBody: "引擎会立即永久删除你的状态、同意和决策记录。本设备也会清除历史记录。之后你可以重新给予同意再开始。",
    confirmErase: "是的，删除",
    cancel: "取消",
    erased: "已删除。引擎不再认识你。",
  },
  fmtTime: (iso: string) => new Date(iso).toLocaleString("zh-CN", { dateStyle: "medium", timeStyle: "short" }),
};
