/**
 * Retention deletes in chunks: `deleteChunk(limit)` deletes at most `limit`
 * rows and says how many it did; this repeats it until a chunk comes back
 * short, yielding to the event loop between chunks, so a long prune never
 * stalls ingest and keepalives for its whole duration. Returns the total.
 */
export async function deleteInChunks(deleteChunk: (limit: number) => number, chunk: number): Promise<number> {
  let total = 0
  for (let n = chunk; n === chunk;) {
    n = deleteChunk(chunk)
    total += n
    await new Promise<void>((resolve) => setImmediate(resolve))
  }
  return total
}
