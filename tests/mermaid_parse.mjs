// Mermaid itself (the library GitHub's renderer runs) reading our diagrams: for each Markdown
// file, one JSON line with the participants and the messages and notes as Mermaid parsed them,
// or the error it gave. Usage: node mermaid_parse.mjs NODE_PREFIX FILE.md...
// NODE_PREFIX holds node_modules with mermaid and jsdom (see .ci/run).
import fs from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const [prefix, ...files] = process.argv.slice(2);
const require = createRequire(`${prefix}/`);
const { JSDOM } = require("jsdom");
const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const mermaid = (await import(pathToFileURL(require.resolve("mermaid")).href)).default;
mermaid.initialize({ startOnLoad: false });

for (const file of files) {
  const code = fs.readFileSync(file, "utf8").split("```mermaid\n")[1].split("\n```")[0];
  try {
    const diagram = await mermaid.mermaidAPI.getDiagramFromText(code);
    const db = diagram.db;
    console.log(JSON.stringify({
      file,
      type: diagram.type,
      version: require("mermaid/package.json").version,
      actors: db.getActorKeys().map((key) => [key, db.getActor(key).description]),
      messages: db.getMessages().map((m) => ({ from: m.from, to: m.to, type: m.type,
                                               text: m.message })),
      lineTypes: db.LINETYPE,
    }));
  } catch (error) {
    console.log(JSON.stringify({ file, error: String(error) }));
  }
}
