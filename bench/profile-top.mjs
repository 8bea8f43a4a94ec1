/**
 * The top frames of a V8 CPU profile (`node --cpu-prof`, or BENCH_PROFILE=dir with bench/http.ts):
 * self time by function, inclusive time by function, and self time by package, each with its share
 * of the whole profile. What BENCHMARKS.md quotes as "the profile that led to it".
 *
 *   node bench/profile-top.mjs /tmp/prof/CPU.*.cpuprofile [rows]
 */
import { readFileSync } from 'node:fs'

const [file, rowsArg] = process.argv.slice(2)
if (file === undefined) {
  console.error('usage: node bench/profile-top.mjs <file.cpuprofile> [rows]')
  process.exit(2)
}
const rows = Number(rowsArg ?? 25)
const profile = JSON.parse(readFileSync(file, 'utf8'))
const byId = new Map(profile.nodes.map((n) => [n.id, n]))
const parentOf = new Map()
for (const n of profile.nodes) for (const c of n.children ?? []) parentOf.set(c, n.id)

const timeOf = new Map()
profile.samples.forEach((id, i) => { timeOf.set(id, (timeOf.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)) })

const where = (url) => url.replace(/.*node_modules\//, '').replace(/^file:\/\/.*?\/(dist|src)\//, '$1/')
const frame = (n) => `${n.callFrame.functionName || '(anonymous)'} ${where(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`
const packageOf = (n) => {
  const url = n.callFrame.url
  if (url.includes('node_modules/')) {
    const rest = url.slice(url.lastIndexOf('node_modules/') + 'node_modules/'.length).split('/')
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]
  }
  if (url.startsWith('node:')) return 'node (internal)'
  if (url === '') return n.callFrame.functionName || '(native)'
  return where(url).split('/').slice(0, 2).join('/')
}

const self = new Map()
const inclusive = new Map()
const packages = new Map()
let total = 0
const add = (map, key, t) => map.set(key, (map.get(key) ?? 0) + t)
for (const [id, t] of timeOf) {
  total += t
  const n = byId.get(id)
  add(self, frame(n), t)
  add(packages, packageOf(n), t)
  const seen = new Set()
  for (let cur = id; cur !== undefined; cur = parentOf.get(cur)) {
    const key = frame(byId.get(cur))
    if (!seen.has(key)) { seen.add(key); add(inclusive, key, t) }
  }
}

const print = (title, map) => {
  console.log(`\n${title}`)
  for (const [key, t] of [...map].sort((a, b) => b[1] - a[1]).slice(0, rows)) {
    console.log(`${(t / 1000).toFixed(0).padStart(7)} ms ${(100 * t / total).toFixed(1).padStart(5)} %  ${key}`)
  }
}
console.log(`${file}: ${(total / 1e6).toFixed(1)} s sampled`)
print('self time by package', packages)
print('self time by function', self)
print('inclusive time by function', inclusive)
