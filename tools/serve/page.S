/* The chat page served at GET /, as bytes in the program (no files to install). */
    .section .rodata
    .global llmux_chat_html
    .global llmux_chat_html_end
llmux_chat_html:
    .incbin "tools/serve/chat.html"
llmux_chat_html_end:
    .section .note.GNU-stack,"",@progbits
