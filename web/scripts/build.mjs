// Builds dist/: the TypeScript compiled to ES modules (dist/js) and the
// static files copied beside them. No bundler: the browser loads the
// modules as they are.
import { execFileSync } from "node:child_process";
import { cpSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const web = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(web, "dist");
rmSync(dist, { recursive: true, force: true });
execFileSync(process.execPath, [join(web, "node_modules", "typescript", "bin", "tsc"), "-p", join(web, "tsconfig.json")], { stdio: "inherit" });
cpSync(join(web, "static"), dist, { recursive: true });
console.log(`built ${dist}`);
