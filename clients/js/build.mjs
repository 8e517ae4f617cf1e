// Builds the npm package from src/switchboard.js, an ES module typed with JSDoc:
//   dist/switchboard.js     ESM: the source, byte for byte
//   dist/switchboard.cjs    CommonJS, transpiled by TypeScript
//   dist/switchboard.d.ts   declarations generated from the JSDoc (.d.cts: the same, for require)
// and writes the ESM file to app/static/switchboard.js, the browser file every instance serves.
// `node build.mjs --check` builds dist/ and fails, writing nothing else, when the committed browser
// file differs from the fresh build (tests/packaging/test_js_package.py runs it).
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const here = dirname(fileURLToPath(import.meta.url));
const source = join(here, "src", "switchboard.js");
const dist = join(here, "dist");
const served = join(here, "..", "..", "app", "static", "switchboard.js");

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);
copyFileSync(source, join(dist, "switchboard.js"));

const code = readFileSync(source, "utf8");
const cjs = ts.transpileModule(code, {
  fileName: "switchboard.js",
  compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, allowJs: true },
});
writeFileSync(join(dist, "switchboard.cjs"), cjs.outputText);

const program = ts.createProgram([source], {
  allowJs: true,
  declaration: true,
  emitDeclarationOnly: true,
  outDir: dist,
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.ESNext,
  lib: ["lib.es2022.d.ts", "lib.dom.d.ts"],
  skipLibCheck: true,
});
const emitted = program.emit();
const problems = [...ts.getPreEmitDiagnostics(program), ...emitted.diagnostics];
if (problems.length) {
  const host = { getCanonicalFileName: (f) => f, getCurrentDirectory: () => here, getNewLine: () => "\n" };
  process.stderr.write(ts.formatDiagnostics(problems, host));
  process.exit(1);
}
copyFileSync(join(dist, "switchboard.d.ts"), join(dist, "switchboard.d.cts"));

const built = readFileSync(join(dist, "switchboard.js"));
if (process.argv.includes("--check")) {
  if (!readFileSync(served).equals(built)) {
    process.stderr.write(`${served} differs from the build of ${source}: run npm run build in clients/js\n`);
    process.exit(1);
  }
} else {
  writeFileSync(served, built);
}
