import { Readable } from 'node:stream'
import type { AedesPersistence, Packet } from 'aedes-persistence'
import { requireCjs } from '../common/cjs.js'

/**
 * aedes's in-memory persistence answers a SUBSCRIBE's retained-message lookup
 * by testing every retained topic against each filter of the SUBSCRIBE: the
 * cost of one subscribe grows with the number of retained messages. Every
 * device retains its birth (devices/ID/state), and every device subscribes
 * (to its own acks, commands and jobs) each time it connects, so a fleet
 * coming online costs devices × retained topic tests: quadratic. With 10,000
 * devices that was ~20% of the hub's CPU while they connected, and it is why
 * the connect ramp stalled past ~7,000 devices (issue #14).
 *
 * A filter without wildcards matches exactly one topic, so
 * `createRetainedPersistence` keeps its own index of the retained messages by
 * topic, fed by the same storeRetained calls, and answers those filters from
 * it; filters with `+` or `#` (observers, a handful) still go to aedes's
 * scan. The index holds the same packets aedes's store holds, updated in the
 * same call (a retained message with an empty payload deletes the topic).
 */

/** aedes 1.x calls it without a callback and awaits the promise; the callback form is kept for other callers. */
type StoreRetained = (packet: Packet, cb?: (err: Error | null | undefined) => void) => Promise<void> | undefined

const isExact = (filter: string): boolean => !filter.includes('+') && !filter.includes('#')

export function createRetainedPersistence(): AedesPersistence {
  const create = requireCjs('aedes-persistence') as () => AedesPersistence
  const persistence = create()
  const retained = new Map<string, Packet>()
  const storeRetained = persistence.storeRetained.bind(persistence) as unknown as StoreRetained
  const scan = persistence.createRetainedStreamCombi.bind(persistence)

  const indexed: StoreRetained = (packet, cb) => {
    if (packet.cmd === 'publish') {
      if (packet.payload.length === 0) retained.delete(packet.topic)
      else retained.set(packet.topic, { ...packet })
    }
    return storeRetained(packet, cb)
  }
  // aedes-persistence's types describe the callback form only.
  ;(persistence as unknown as { storeRetained: StoreRetained }).storeRetained = indexed
  const combi = (filters: string[]): Readable => {
    const exact: Packet[] = []
    const wild: string[] = []
    for (const f of filters) {
      if (!isExact(f)) wild.push(f)
      else {
        const p = retained.get(f)
        if (p !== undefined) exact.push(p)
      }
    }
    if (wild.length === 0) return Readable.from(exact)
    if (exact.length === 0) return scan(wild)
    return Readable.from((async function* () {
      yield* exact
      yield* scan(wild) as AsyncIterable<Packet>
    })())
  }
  persistence.createRetainedStreamCombi = combi
  persistence.createRetainedStream = (filter) => combi([filter])
  return persistence
}
