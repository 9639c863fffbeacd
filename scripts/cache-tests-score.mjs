// Scores a cache-tests result file the way cache-tests.fyi does: each test
// is `required`, `optimal` (optional) or `check` (informational), and its
// result comes from the suite's own determineTestResult (which also marks
// tests whose setup failed). Browser-only tests are not run against a
// proxy and not counted; CDN-only ones are.
//
// Usage: node cache-tests-score.mjs <cache-tests checkout> <results.json>
import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

const [dir, resultsFile] = process.argv.slice(2)
const load = (rel) => import(pathToFileURL(path.join(dir, rel)).href)
const { default: suites } = await load('tests/index.mjs')
const { determineTestResult, resultTypes } = await load('test-engine/lib/results.mjs')
const results = JSON.parse(fs.readFileSync(resultsFile, 'utf8'))

const kinds = { required: [0, 0], optimal: [0, 0], check: [0, 0] }
const sections = []
const failing = []
for (const suite of suites) {
  const row = { name: suite.name, required: [0, 0], optimal: [0, 0] }
  for (const test of suite.tests) {
    if (test.browser_only) continue
    const kind = test.kind || 'required'
    const result = determineTestResult(suites, test.id, results)
    // A check passes with "yes" (the behaviour is present), the others
    // with "pass".
    const passed = result === resultTypes.pass || result === resultTypes.yes
    kinds[kind][1]++
    if (passed) kinds[kind][0]++
    if (kind !== 'check') {
      row[kind][1]++
      if (passed) row[kind][0]++
    }
    if (kind === 'required' && !passed) {
      failing.push(`- \`${test.id}\` (${result[2]}): ${test.name}`)
    }
  }
  sections.push(row)
}

const pair = ([passed, total]) => `${passed} / ${total}`
console.log(`required: ${pair(kinds.required)}`)
console.log(`optional: ${pair(kinds.optimal)}`)
console.log(`required + optional: ${kinds.required[0] + kinds.optimal[0]} / ${kinds.required[1] + kinds.optimal[1]}`)
console.log(`checks answered yes: ${pair(kinds.check)}`)
console.log('\n| section | required | optional |\n|---|---|---|')
for (const s of sections) console.log(`| ${s.name} | ${pair(s.required)} | ${pair(s.optimal)} |`)
console.log(`\nRequired tests not passed (${failing.length}):`)
console.log(failing.join('\n'))
