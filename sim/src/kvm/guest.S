# The KVM guest's program (sim/src/kvm/program.rs embeds its bytes with
# this listing). Assemble: as guest.S -o g.o && objdump -d -Mintel g.o
.intel_syntax noprefix
.code64
entry:
  mov r11, [rbx+0]
  mov r12, [rbx+8]
  mov r13, [rbx+16]
  mov r15, [rbx+32]
head:
  mov r14, [rbx+24]
  mov rax, [0x1000]
  cmp rax, [rbx+48]
  jne check
  test r14, r14
  jz write
wait:
  rdtsc
  shl rdx, 32
  or rax, rdx
  mov rcx, rax
  sub rax, r10
  jns due
  neg rax
  cmp rax, [rbx+64]
  jbe ahead
  mov [rbx+72], r10
  out 0x80, al
  jmp wait
due:
  cmp rax, r15
  jbe ahead
  mov r10, rcx
  sub r10, r15
ahead:
  add r10, r14
write:
  mov rax, r9
  shl rax, 13
  xor r9, rax
  mov rax, r9
  shr rax, 7
  xor r9, rax
  mov rax, r9
  shl rax, 17
  xor r9, rax
  mov rax, r9
  xor edx, edx
  div r12
  inc r8
  mov rdi, rdx
  shl rdi, 12
  add rdi, r11
  mov rsi, r8
  and esi, 63
  shl esi, 6
  add rsi, rdi
  mov [rsi], r8
  mov [rsi+8], rdx
  mov rax, r8
  imul rax, rax, 0x2545F491
  xor rax, rdi
  mov [rsi+16], rax
  mov [r13+rdx*8], r8
  mov [rbx+40], r8
  jmp head
check:
  mov rbp, rax
  xor ecx, ecx
  xor esi, esi
next:
  cmp rcx, r12
  jae done
  mov rax, [r13+rcx*8]
  test rax, rax
  jz skip
  mov rdi, rcx
  shl rdi, 12
  add rdi, r11
  mov rdx, rax
  and edx, 63
  shl edx, 6
  add rdx, rdi
  cmp [rdx], rax
  jne bad
  cmp [rdx+8], rcx
  jne bad
  imul rax, rax, 0x2545F491
  xor rax, rdi
  cmp [rdx+16], rax
  je skip
bad:
  inc rsi
skip:
  inc rcx
  jmp next
done:
  mov [rbx+56], rsi
  mov [rbx+48], rbp
  jmp head
