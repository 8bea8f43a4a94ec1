/**
 * A counting semaphore: at most `max` holders at once, the rest wait in FIFO order.
 * Used to bound concurrent argon2 work so a login flood queues instead of
 * allocating 19 MiB per hash without limit.
 */
export function createSemaphore (max: number) {
  let active = 0
  const waiting: Array<() => void> = []

  function release (): void {
    const next = waiting.shift()
    if (next !== undefined) next()
    else active--
  }

  return {
    async run<T> (fn: () => Promise<T>): Promise<T> {
      if (active < max) active++
      else await new Promise<void>((resolve) => waiting.push(resolve))
      try {
        return await fn()
      } finally {
        release()
      }
    }
  }
}
export type Semaphore = ReturnType<typeof createSemaphore>
