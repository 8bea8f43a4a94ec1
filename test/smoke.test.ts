import t from 'tap'
import { buildTestApp, signup, bearer } from './helper.ts'

t.test('smoke', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  const me = await app.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) })
  t.equal(me.statusCode, 200, me.body)
  const r = await app.inject({ url: '/health/ready' })
  t.equal(r.statusCode, 200, r.body)
  const d = await app.inject({ url: '/docs/json' })
  t.equal(d.statusCode, 200)
  console.log(JSON.stringify(Object.keys(d.json().paths)))
})
