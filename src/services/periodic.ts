/**
 * Runs `round` now and then `intervalMs` after each round ends, one round at a time, until
 * stopped; `stop()` waits for the round in progress. The timer does not keep the process alive.
 */
export function startPeriodic (round: () => Promise<unknown>, intervalMs: number, onError: (err: unknown) => void) {
  let stopped = false
  let running: Promise<unknown> = Promise.resolve()
  let timer: NodeJS.Timeout | undefined
  const tick = () => {
    running = round().catch(onError).finally(() => {
      if (!stopped) timer = setTimeout(tick, intervalMs).unref()
    })
  }
  timer = setTimeout(tick, 0).unref()
  return {
    async stop () {
      stopped = true
      clearTimeout(timer)
      await running
    }
  }
}
